import Catalog
import Foundation
import FuzzSupport

// An access-order model (models/<digest>.json) checked against the manifest of the version being
// run, as the prefetcher loads it; the digest check is skipped so that any bytes reach the parser.

let config = ApplianceConfig(name: "web", version: "1", memoryMiB: 64, vcpus: 1)
let chunk = ChunkRef(id: Digest.of(Data("chunk".utf8)), stored: 1000)
let manifest = Manifest(config: config, chunkSize: 65536, dictionaries: [], artifacts: [
    Artifact(role: .disk, size: 65536 * 4, digest: Digest.of(Data("disk".utf8)), chunks: [chunk, chunk, nil, chunk]),
    Artifact(role: .kernel, size: 70000, digest: Digest.of(Data("kernel".utf8)), chunks: [chunk, chunk]),
])
let manifestDigest = Digest.of(try! manifest.encoded())

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAccessModel(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let model = try? AccessModel.decode(FuzzInput.data(bytes, count), expected: nil, manifest: manifest,
                                              manifestDigest: manifestDigest, file: "model") else { return 0 }
    // What the prefetcher does with an accepted model: resolve every location, follow transitions.
    for cluster in model.clusters {
        for location in cluster.chunks { _ = try? location.ref(in: manifest) }
        for transition in cluster.next { precondition(model.clusters.indices.contains(transition.to), "transition to a missing cluster") }
    }
    for transition in model.start { precondition(model.clusters.indices.contains(transition.to), "start names a missing cluster") }
    _ = model.workingSetBytes
    return 0
}

func seeds() throws -> [String: Data] {
    let clusters = [
        AccessModel.Cluster(chunks: [ChunkLocation(role: .kernel, index: 0), ChunkLocation(role: .kernel, index: 1)], bytes: 2000,
                            support: 1, startSeconds: 0, next: [AccessModel.Transition(to: 1, probability: 0.75)]),
        AccessModel.Cluster(chunks: [ChunkLocation(role: .disk, index: 3), ChunkLocation(role: .disk, index: 0)], bytes: 2000,
                            support: 0.75, startSeconds: 0.5, next: [], afterReady: true),
    ]
    let model = AccessModel(appliance: "web", version: "1", manifest: manifestDigest, runs: 4,
                            start: [AccessModel.Transition(to: 0, probability: 1)], clusters: clusters)
    return ["two-clusters": try model.encoded()]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_access_model_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzAccessModel)
}
