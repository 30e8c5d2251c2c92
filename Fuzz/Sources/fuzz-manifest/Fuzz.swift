import Catalog
import Foundation
import FuzzSupport

// manifest.json as a client reads it from a mirror (the digest check is skipped: a hostile
// publisher or a collision-free mirror still hands the parser these bytes). A manifest that passes
// validation must be safe to walk: every chunk length of every artifact is computed, as the
// fetcher and the lazy image do.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzManifest(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let manifest = try? Manifest.decode(FuzzInput.data(bytes, count), expected: nil, file: "manifest.json") else { return 0 }
    for artifact in manifest.artifacts {
        var total = 0
        for index in artifact.chunks.indices {
            let length = manifest.chunkLength(artifact, index: index)
            precondition(length > 0 && length <= manifest.chunkSize, "chunk \(index) of \(artifact.role) has length \(length)")
            total += length
        }
        precondition(total == artifact.size, "chunks of \(artifact.role) add up to \(total), not \(artifact.size)")
    }
    _ = manifest.distinctChunks
    let again = try! Manifest.decode(try! manifest.encoded(), expected: nil, file: "manifest.json")
    precondition(again == manifest, "a valid manifest does not survive encode and decode")
    return 0
}

func seeds() throws -> [String: Data] {
    let config = ApplianceConfig(name: "fuzz", version: "1", memoryMiB: 64, vcpus: 1, kernelCommandLine: "console=ttyS0")
    let chunk = ChunkRef(id: Digest.of(Data("chunk".utf8)), stored: 100)
    let small = Manifest(config: config, chunkSize: 4096, dictionaries: [], artifacts: [
        Artifact(role: .kernel, size: 5000, digest: Digest.of(Data("kernel".utf8)), chunks: [chunk, nil]),
    ])
    let withDisk = Manifest(config: config, chunkSize: 65536, dictionaries: [Digest.of(Data("dict".utf8))], artifacts: [
        Artifact(role: .disk, size: 65536 * 3, digest: Digest.of(Data("disk".utf8)),
                 chunks: [ChunkRef(id: chunk.id, stored: 300, dict: 0), nil, chunk]),
        Artifact(role: .kernel, size: 1, digest: Digest.of(Data("k".utf8)), chunks: [chunk]),
    ])
    return ["kernel-only": try small.encoded(), "disk-dictionary": try withDisk.encoded()]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_manifest_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzManifest)
}
