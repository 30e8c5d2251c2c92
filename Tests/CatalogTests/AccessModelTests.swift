import Catalog
import Foundation
import Testing

@Suite struct AccessModelTests {
    /// A manifest with one disk of `count` chunks; chunk 3 is all zero.
    static func manifest(count: Int = 10) -> (Manifest, Digest) {
        let refs: [ChunkRef?] = (0..<count).map { $0 == 3 ? nil : ChunkRef(id: Digest.of(Data([UInt8($0)])), stored: 100 + $0) }
        let manifest = Manifest(config: ApplianceConfig(name: "app", version: "1", memoryMiB: 64, vcpus: 1), chunkSize: 4096,
                                dictionaries: [], artifacts: [Artifact(role: .disk, size: count * 4096, digest: Digest.of(Data()), chunks: refs)])
        return (manifest, Digest.of(try! manifest.encoded()))
    }

    static func model(manifest digest: Digest) -> AccessModel {
        AccessModel(appliance: "app", version: "1", manifest: digest, runs: 2,
                    start: [.init(to: 0, probability: 1)],
                    clusters: [
                        .init(chunks: [.init(role: .disk, index: 0), .init(role: .disk, index: 1)], bytes: 201, support: 1, startSeconds: 0,
                              next: [.init(to: 1, probability: 0.5)]),
                        .init(chunks: [.init(role: .disk, index: 5)], bytes: 105, support: 0.5, startSeconds: 2, next: []),
                    ])
    }

    @Test func roundTripsThroughCanonicalBytes() throws {
        let (manifest, digest) = Self.manifest()
        let model = Self.model(manifest: digest)
        let bytes = try model.encoded()
        #expect(String(decoding: bytes, as: UTF8.self).contains("\"disk:5\""))
        let decoded = try AccessModel.decode(bytes, expected: Digest.of(bytes), manifest: manifest, manifestDigest: digest, file: "m")
        #expect(decoded == model)
        #expect(try decoded.digest == Digest.of(bytes))
        #expect(decoded.workingSetBytes == 306)
    }

    @Test func staleAndCorruptModelsAreRefused() throws {
        let (manifest, digest) = Self.manifest()
        let good = Self.model(manifest: digest)
        func refused(_ model: AccessModel) -> Bool {
            (try? AccessModel.decode(try model.encoded(), expected: nil, manifest: manifest, manifestDigest: digest, file: "m")) == nil
        }
        var stale = good
        stale.manifest = Digest.of(Data("another version".utf8))
        #expect(refused(stale))
        var outOfRange = good
        outOfRange.clusters[1].chunks = [.init(role: .disk, index: 10)]
        #expect(refused(outOfRange))
        var twice = good
        twice.clusters[1].chunks = [.init(role: .disk, index: 1)]
        twice.clusters[1].bytes = 101
        #expect(refused(twice))
        var wrongBytes = good
        wrongBytes.clusters[0].bytes = 1
        #expect(refused(wrongBytes))
        var badProbability = good
        badProbability.clusters[0].next = [.init(to: 1, probability: 0.8), .init(to: 0, probability: 0.8)]
        #expect(refused(badProbability))
        var danglingTransition = good
        danglingTransition.start = [.init(to: 7, probability: 1)]
        #expect(refused(danglingTransition))
        var otherRole = good
        otherRole.clusters[1].chunks = [.init(role: .memory, index: 0)]
        #expect(refused(otherRole))
        // Bytes that do not hash to the catalogue's digest, and garbage.
        let bytes = try good.encoded()
        #expect(throws: CatalogError.self) { try AccessModel.decode(bytes, expected: Digest.of(Data()), manifest: manifest, manifestDigest: digest, file: "m") }
        #expect(throws: CatalogError.self) { try AccessModel.decode(Data("{\"format\":1}".utf8), expected: nil, manifest: manifest, manifestDigest: digest, file: "m") }
    }

    @Test func chunkLocationsParseStrictly() throws {
        #expect(try ChunkLocation(parsing: "memory:42") == ChunkLocation(role: .memory, index: 42))
        for bad in ["disk", "disk:", "disk:-1", "disk:1x", "tape:1", ":1", "disk:99999999999999999999"] {
            #expect(throws: CatalogError.self) { try ChunkLocation(parsing: bad) }
        }
    }

    @Test func tracesAreValidatedAndMatchedToTheirManifest() throws {
        let (manifest, digest) = Self.manifest()
        let disk = manifest.artifact(.disk)!
        let record = RunTrace.Record(location: .init(role: .disk, index: 2), chunk: disk.chunks[2]?.id, offset: 8192,
                                     wallSeconds: 0.5, guestSeconds: 0.1, outcome: .demandMiss, stallSeconds: 0.2)
        let trace = RunTrace(appliance: "app", version: "1", manifest: digest, prefetch: "none", model: nil,
                             started: Date(timeIntervalSince1970: 1_700_000_000), readySeconds: 1, records: [record])
        let decoded = try RunTrace.decode(try trace.encoded(), file: "t")
        #expect(decoded == trace)
        #expect(decoded.matches(manifest))
        var forged = trace
        forged.records[0].chunk = Digest.of(Data("x".utf8))
        #expect(!forged.matches(manifest))
        var twice = trace
        twice.records.append(record)
        #expect(throws: CatalogError.self) { try RunTrace.decode(try twice.encoded(), file: "t") }
        var negative = trace
        negative.records[0].stallSeconds = -1
        #expect(throws: CatalogError.self) { try RunTrace.decode(try negative.encoded(), file: "t") }
        #expect(throws: CatalogError.self) { try RunTrace.decode(Data("[1,2]".utf8), file: "t") }
    }
}
