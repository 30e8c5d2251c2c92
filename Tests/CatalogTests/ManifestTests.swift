import Catalog
import Foundation
import Testing

@Suite struct ManifestTests {
    static func sample() -> Manifest {
        let chunk = ChunkRef(id: Digest.of(Data("a".utf8)), stored: 100)
        let artifact = Artifact(role: .disk, size: 65536 * 2 + 10, digest: Digest.of(Data("x".utf8)), chunks: [chunk, nil, chunk])
        return Manifest(config: ApplianceConfig(name: "demo", version: "1.0", memoryMiB: 64, vcpus: 1),
                        chunkSize: 65536, dictionaries: [], artifacts: [artifact])
    }

    @Test func canonicalRoundTrip() throws {
        let manifest = Self.sample()
        let data = try manifest.encoded()
        #expect(try manifest.encoded() == data)
        let decoded = try Manifest.decode(data, expected: Digest.of(data), file: "m")
        #expect(decoded == manifest)
        #expect(decoded.chunkLength(decoded.artifacts[0], index: 2) == 10)
        #expect(decoded.distinctChunks.count == 1)
    }

    @Test func tamperedManifestIsRefusedBeforeParsing() throws {
        let data = try Self.sample().encoded()
        var tampered = data
        tampered[tampered.count - 3] ^= 1
        #expect(throws: CatalogError.digestMismatch(object: "m", actual: Digest.of(tampered).hex)) {
            try Manifest.decode(tampered, expected: Digest.of(data), file: "m")
        }
    }

    @Test func structuralLiesAreRefused() throws {
        var wrongCount = Self.sample()
        wrongCount.artifacts[0].chunks.removeLast()
        var badDictionary = Self.sample()
        badDictionary.artifacts[0].chunks[0]?.dict = 0
        var hugeStored = Self.sample()
        hugeStored.artifacts[0].chunks[0]?.stored = 10 << 20
        var oddChunkSize = Self.sample()
        oddChunkSize.chunkSize = 65535
        var empty = Self.sample()
        empty.artifacts = []
        var badName = Self.sample()
        badName.config.name = "../etc"
        var hugeMemory = Self.sample()
        hugeMemory.config.memoryMiB = 1 << 30
        for manifest in [wrongCount, badDictionary, hugeStored, oddChunkSize, empty, badName, hugeMemory] {
            let data = try manifest.encoded()
            #expect(throws: CatalogError.self) { try Manifest.decode(data, expected: nil, file: "m") }
        }
    }

    /// A disk is optional: kernel + initrd only is an appliance `streamvm run` starts, so its
    /// manifest must be accepted too.
    @Test func aManifestWithoutADiskIsValid() throws {
        var diskless = Self.sample()
        diskless.artifacts[0].role = .kernel
        diskless.artifacts.append(Artifact(role: .initrd, size: 10, digest: Digest.of(Data("i".utf8)), chunks: [nil]))
        let data = try diskless.encoded()
        let decoded = try Manifest.decode(data, expected: Digest.of(data), file: "m")
        #expect(decoded.artifact(.disk) == nil)
        #expect(decoded.artifacts.map(\.role) == [.kernel, .initrd])
    }

    /// A hostile size near Int.max must be refused as a count mismatch, not trap on overflow while
    /// the chunk count is rounded up.
    @Test func anArtifactSizeNearIntMaxIsRefusedWithoutOverflow() throws {
        var hostile = Self.sample()
        hostile.artifacts[0].size = Int.max
        let expected = Int.max / 65536 + 1
        #expect(throws: CatalogError.malformed(file: "m", problem: "artifact disk of \(Int.max) bytes needs \(expected) chunks, lists 3")) {
            try Manifest.decode(try hostile.encoded(), expected: nil, file: "m")
        }
    }

    @Test func aManifestWithoutArtifactsIsRefusedSayingSo() throws {
        var empty = Self.sample()
        empty.artifacts = []
        #expect(throws: CatalogError.malformed(file: "m", problem: "lists no artifacts")) {
            try Manifest.decode(try empty.encoded(), expected: nil, file: "m")
        }
    }

    @Test func malformedAndTruncatedAreRefusedWithFileName() throws {
        let data = try Self.sample().encoded()
        do {
            _ = try Manifest.decode(data.prefix(data.count - 5), expected: nil, file: "manifests/x.json")
            Issue.record("truncated manifest was accepted")
        } catch let error as CatalogError {
            #expect(error.description.hasPrefix("manifests/x.json: malformed"))
        }
    }
}
