import Catalog
import Foundation
import Logging
import Testing
@testable import StreamServer

@Suite struct LearningTests {
    /// A disk of 100 chunks with 1000 stored bytes each.
    static let manifest = Manifest(
        config: ApplianceConfig(name: "app", version: "1", memoryMiB: 64, vcpus: 1), chunkSize: 4096, dictionaries: [],
        artifacts: [Artifact(role: .disk, size: 100 * 4096, digest: Digest.of(Data()),
                             chunks: (0..<100).map { ChunkRef(id: Digest.of(Data([UInt8($0)])), stored: 1000) })])
    static let manifestDigest = Digest.of(try! manifest.encoded())

    /// A run touching `indices` in order, one every 10 ms starting at `at` seconds.
    static func run(_ phases: [(at: Double, indices: [Int])]) -> RunTrace {
        var records: [RunTrace.Record] = []
        for phase in phases {
            for (step, index) in phase.indices.enumerated() {
                let seconds = phase.at + Double(step) * 0.01
                records.append(RunTrace.Record(location: ChunkLocation(role: .disk, index: index), chunk: manifest.artifacts[0].chunks[index]?.id,
                                               offset: index * 4096, wallSeconds: seconds + 1, guestSeconds: seconds,
                                               outcome: .demandMiss, stallSeconds: 0.01))
            }
        }
        return RunTrace(appliance: "app", version: "1", manifest: manifestDigest, prefetch: "none", model: nil,
                        started: Date(timeIntervalSince1970: 1_700_000_000), readySeconds: 3, records: records)
    }

    static let boot = Array(0..<10)
    static let pathA = Array(20..<30)
    static let pathB = Array(40..<50)

    static func cluster(of index: Int, in model: AccessModel) -> Int? {
        model.clusters.firstIndex { $0.chunks.contains(ChunkLocation(role: .disk, index: index)) }
    }

    @Test func commonPathIsOneOrderedClusterPerPhase() throws {
        let traces = (0..<5).map { _ in Self.run([(0, Self.boot), (5, Self.pathA)]) }
        let model = try AccessModelLearner().learn(traces: traces, manifest: Self.manifest, manifestDigest: Self.manifestDigest)
        #expect(model.clusters.count == 2)
        #expect(model.clusters[0].chunks == Self.boot.map { ChunkLocation(role: .disk, index: $0) })
        #expect(model.clusters[1].chunks == Self.pathA.map { ChunkLocation(role: .disk, index: $0) })
        #expect(model.clusters[0].bytes == 10_000)
        #expect(model.start == [.init(to: 0, probability: 1)])
        #expect(model.clusters[0].next == [.init(to: 1, probability: 1)])
        #expect(model.clusters[1].startSeconds == 5)
        try model.validate(file: "learned", manifest: Self.manifest, manifestDigest: Self.manifestDigest)
    }

    @Test func clustersTouchedAfterTheReadyMarkerAreMarkedAndNeverMixedWithBootChunks() throws {
        // Boot then A with no pause between them; the ready marker falls between the two (A at
        // wall 1.10 s and later), so A is a cluster of its own, marked after-ready.
        let traces = (0..<3).map { _ in
            var trace = Self.run([(0, Self.boot + Self.pathA)])
            trace.readySeconds = 1.095
            return trace
        }
        let model = try AccessModelLearner().learn(traces: traces, manifest: Self.manifest, manifestDigest: Self.manifestDigest)
        #expect(model.clusters.count == 2)
        #expect(model.clusters[0].chunks == Self.boot.map { ChunkLocation(role: .disk, index: $0) })
        #expect(!model.clusters[0].afterReady)
        #expect(model.clusters[1].afterReady)
        #expect(model.clusters[0].next == [.init(to: 1, probability: 1)])
        // Without a ready marker nothing is marked and the burst stays one cluster.
        let unmarked = traces.map { trace -> RunTrace in
            var trace = trace
            trace.readySeconds = nil
            return trace
        }
        let plain = try AccessModelLearner().learn(traces: unmarked, manifest: Self.manifest, manifestDigest: Self.manifestDigest)
        #expect(plain.clusters.count == 1 && !plain.clusters[0].afterReady)
        // Models learned before the mark existed still decode (as not after-ready).
        let encoded = String(decoding: try plain.encoded(), as: UTF8.self).replacingOccurrences(of: "\"afterReady\":false,", with: "")
        #expect(!encoded.contains("afterReady"))
        let old = try AccessModel.decode(Data(encoded.utf8), expected: nil, manifest: Self.manifest, manifestDigest: Self.manifestDigest, file: "old")
        #expect(old == plain)
    }

    @Test func divergentRunsAddABranchInsteadOfPoisoningTheCommonPath() throws {
        var traces = (0..<7).map { _ in Self.run([(0, Self.boot), (5, Self.pathA)]) }
        traces += (0..<3).map { _ in Self.run([(0, Self.boot), (5, Self.pathB)]) }
        // One odd run: a different order inside boot and a burst of chunks nobody else touches (before
        // its ready marker at wall 3 s, so the marker does not split the burst).
        traces.append(Self.run([(0, Self.boot.reversed()), (1.5, Array(70..<80)), (5, Self.pathA)]))
        let model = try AccessModelLearner().learn(traces: traces, manifest: Self.manifest, manifestDigest: Self.manifestDigest)
        try model.validate(file: "learned", manifest: Self.manifest, manifestDigest: Self.manifestDigest)

        // The common path is intact: boot in the majority's order, then A, most likely.
        let bootCluster = try #require(Self.cluster(of: 0, in: model))
        #expect(model.clusters[bootCluster].chunks == Self.boot.map { ChunkLocation(role: .disk, index: $0) })
        #expect(model.start.first?.to == bootCluster)
        let a = try #require(Self.cluster(of: 20, in: model))
        let b = try #require(Self.cluster(of: 40, in: model))
        let odd = try #require(Self.cluster(of: 70, in: model))
        #expect(Set([a, b, odd]).count == 3)
        #expect(Set(Self.pathA.map { Self.cluster(of: $0, in: model) }) == [a])
        #expect(Set(Self.pathB.map { Self.cluster(of: $0, in: model) }) == [b])
        let next = model.clusters[bootCluster].next
        #expect(next.first?.to == a)
        #expect(abs((next.first { $0.to == a }?.probability ?? 0) - 7.0 / 11) < 1e-9)
        #expect(abs((next.first { $0.to == b }?.probability ?? 0) - 3.0 / 11) < 1e-9)
        // The odd run's private chunks form a cluster of their own with low support and probability.
        #expect(Set((70..<80).map { Self.cluster(of: $0, in: model) }) == [odd])
        #expect(abs(model.clusters[odd].support - 1.0 / 11) < 1e-9)
        #expect((next.first { $0.to == odd }?.probability ?? 0) < 0.1)
    }

    @Test func learnPublishesAModelAndANewCatalogueWithoutTouchingChunks() async throws {
        let catalogue = try TestCatalogue()
        let manifest = try catalogue.directory.loadManifest(catalogue.manifestDigest)
        let traceRoot = catalogue.base + "/traces"
        let publisher = ModelPublisher(catalog: catalogue.directory, key: catalogue.key, traceRoot: traceRoot, logger: Logger(label: "test"))
        #expect(throws: ServerError.self) { try publisher.learn(appliance: "demo") }

        let disk = manifest.artifacts[0]
        func trace(_ order: [Int]) -> RunTrace {
            RunTrace(appliance: "demo", version: "1", manifest: catalogue.manifestDigest, prefetch: "none", model: nil,
                     started: Date(), readySeconds: nil,
                     records: order.enumerated().map { step, index in
                         RunTrace.Record(location: ChunkLocation(role: .disk, index: index), chunk: disk.chunks[index]?.id, offset: index * disk.size / 4,
                                         wallSeconds: Double(step), guestSeconds: Double(step) * 0.1, outcome: .demandMiss, stallSeconds: 0.5)
                     })
        }
        try AtomicFile.makeDirectories(traceRoot + "/demo")
        try trace([2, 0, 1]).encoded().write(to: URL(fileURLWithPath: traceRoot + "/demo/20260101T000000Z-a.json"))
        try trace([2, 0]).encoded().write(to: URL(fileURLWithPath: traceRoot + "/demo/20260101T000001Z-b.json"))
        try Data("{\"not\": \"a trace\"}".utf8).write(to: URL(fileURLWithPath: traceRoot + "/demo/20260101T000002Z-c.json"))
        var forged = trace([3])
        forged.records[0].chunk = Digest.of(Data("forged".utf8))
        try forged.encoded().write(to: URL(fileURLWithPath: traceRoot + "/demo/20260101T000003Z-d.json"))

        let chunksBefore = try FileManager.default.subpathsOfDirectory(atPath: catalogue.directory.root + "/chunks").sorted()
        let report = try publisher.learn(appliance: "demo")
        #expect(report.runs == 2)
        #expect(report.skipped.count == 2)
        #expect(report.published)
        #expect(report.generation == 2)
        let signed = try #require(try catalogue.directory.loadCatalog(trust: .key(catalogue.key.publicKey)))
        #expect(signed.index.appliances["demo"]?.model == report.model)
        #expect(signed.index.generation == 2)
        let model = try AccessModel.decode(try catalogue.directory.read(.model(report.model)), expected: report.model,
                                           manifest: manifest, manifestDigest: catalogue.manifestDigest, file: "model")
        #expect(model.clusters.first?.chunks.first == ChunkLocation(role: .disk, index: 2))
        #expect(try FileManager.default.subpathsOfDirectory(atPath: catalogue.directory.root + "/chunks").sorted() == chunksBefore)

        // Learning again from the same traces changes nothing.
        let again = try publisher.learn(appliance: "demo")
        #expect(!again.published)
        #expect(again.model == report.model)
        #expect(try catalogue.directory.loadCatalog(trust: .insecure)?.index.generation == 2)

        // The served catalogue names the model and serves it verified.
        let server = try await RunningServer.start(catalogue: catalogue)
        let served = try await request(server, .GET, "/" + CatalogObject.model(report.model).path)
        #expect(served.status == 200)
        await server.stop()
    }

    /// A trace of the demo appliance touching its chunks 2, 0 and 1.
    static func demoTrace(_ catalogue: TestCatalogue) throws -> RunTrace {
        let disk = try catalogue.directory.loadManifest(catalogue.manifestDigest).artifacts[0]
        return RunTrace(appliance: "demo", version: "1", manifest: catalogue.manifestDigest, prefetch: "none", model: nil,
                        started: Date(timeIntervalSince1970: 1_700_000_000), readySeconds: nil,
                        records: [2, 0, 1].enumerated().map { step, index in
                            RunTrace.Record(location: ChunkLocation(role: .disk, index: index), chunk: disk.chunks[index]?.id,
                                            offset: index * TestCatalogue.chunkSize, wallSeconds: Double(step),
                                            guestSeconds: Double(step) * 0.1, outcome: .demandMiss, stallSeconds: 0.1)
                        })
    }

    /// catalog.json re-signed by the catalogue key with models delegated to `modelKey`.
    static func delegate(_ catalogue: TestCatalogue, to modelKey: TrustedKey) throws {
        var index = try #require(try catalogue.directory.loadCatalog(trust: .key(catalogue.key.publicKey))).index
        index.modelKey = modelKey.base64
        index.generation += 1
        try catalogue.directory.write(.catalog, data: try SignedCatalog(index: index, key: catalogue.key).encoded())
    }

    @Test func withDelegationTheModelKeyPublishesModelsJsonAndNeverTouchesTheCatalogue() throws {
        let catalogue = try TestCatalogue()
        let modelKey = SigningKey()
        try Self.delegate(catalogue, to: modelKey.publicKey)
        let traceRoot = catalogue.base + "/traces"
        try AtomicFile.makeDirectories(traceRoot + "/demo")
        try Self.demoTrace(catalogue).encoded().write(to: URL(fileURLWithPath: traceRoot + "/demo/20260101T000000Z-a.json"))
        let catalogBefore = try catalogue.directory.read(.catalog)

        let report = try ModelPublisher(catalog: catalogue.directory, key: modelKey, traceRoot: traceRoot, logger: Logger(label: "test"))
            .learn(appliance: "demo")
        #expect(report.published && report.generation == 1)
        #expect(try catalogue.directory.read(.catalog) == catalogBefore)
        let models = try SignedModelIndex.decode(try catalogue.directory.read(.modelIndex), trust: modelKey.publicKey)
        #expect(models.index.models["demo"] == report.model)
        #expect(catalogue.directory.contains(.model(report.model)))

        // A key the catalogue neither is signed by nor delegates to learns nothing.
        let stranger = ModelPublisher(catalog: catalogue.directory, key: SigningKey(), traceRoot: traceRoot, logger: Logger(label: "test"))
        do {
            _ = try stranger.learn(appliance: "demo")
            Issue.record("an undelegated key published a model")
        } catch let error as ServerError {
            #expect(error.description.contains("delegates models"))
        }
        // models.json signed by someone else is refused, not overwritten, by the delegated learner.
        let foreign = try SignedModelIndex(index: ModelIndex(generation: 9, models: [:]), key: SigningKey()).encoded()
        try catalogue.directory.write(.modelIndex, data: foreign)
        try Self.demoTrace(catalogue).encoded().write(to: URL(fileURLWithPath: traceRoot + "/demo/20260101T000001Z-b.json"))
        #expect(throws: CatalogError.self) {
            try ModelPublisher(catalog: catalogue.directory, key: modelKey, traceRoot: traceRoot, logger: Logger(label: "test")).learn(appliance: "demo")
        }
        #expect(try catalogue.directory.read(.modelIndex) == foreign)
    }

    @Test func theServerLearnsHoldingOnlyTheModelKey() async throws {
        let catalogue = try TestCatalogue()
        let modelKey = SigningKey()
        try Self.delegate(catalogue, to: modelKey.publicKey)
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let catalogBefore = try catalogue.directory.read(.catalog)
        let server = try await RunningServer.start(catalogue: catalogue) {
            $0.traceTokenFile = tokenFile
            $0.learningKey = modelKey
        }
        let stored = try await request(server, .POST, "/v1/traces/demo", headers: [("Authorization", "Bearer \(token)")],
                                       body: Array(try Self.demoTrace(catalogue).encoded()))
        #expect(stored.status == 201)
        var model: Digest?
        for _ in 0..<200 where model == nil {
            try await Task.sleep(nanoseconds: 50_000_000)
            let served = try await request(server, .GET, "/models.json")
            if served.status == 200 {
                model = try SignedModelIndex.decode(Data(served.bytes), trust: modelKey.publicKey).index.models["demo"]
            }
        }
        let digest = try #require(model)
        #expect(try await request(server, .GET, "/" + CatalogObject.model(digest).path).status == 200)
        #expect(try catalogue.directory.read(.catalog) == catalogBefore)
        await server.stop()
    }

    @Test func aServerWithALearningKeyTheCatalogueDoesNotKnowRefusesToStart() throws {
        let catalogue = try TestCatalogue()
        var options = CatalogServer.Options(catalog: catalogue.directory.root)
        options.learningKey = SigningKey()
        do {
            _ = try CatalogServer(options: options, logger: Logger(label: "test"))
            Issue.record("a server started with a learning key it cannot use")
        } catch let error as ServerError {
            #expect(error.description.contains("delegates models"))
        }
        let modelKey = SigningKey()
        try Self.delegate(catalogue, to: modelKey.publicKey)
        options.learningKey = modelKey
        _ = try CatalogServer(options: options, logger: Logger(label: "test"))
    }

    @Test func anotherSignersCatalogueIsNotRewritten() throws {
        let catalogue = try TestCatalogue()
        let publisher = ModelPublisher(catalog: catalogue.directory, key: SigningKey(), traceRoot: catalogue.base + "/traces", logger: Logger(label: "test"))
        #expect(throws: ServerError.self) { try publisher.learn(appliance: "demo") }
    }

    @Test func theServerRelearnsAfterNewTraces() async throws {
        let catalogue = try TestCatalogue()
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) {
            $0.traceTokenFile = tokenFile
            $0.learningKey = catalogue.key
        }
        let manifest = try catalogue.directory.loadManifest(catalogue.manifestDigest)
        let trace = RunTrace(appliance: "demo", version: "1", manifest: catalogue.manifestDigest, prefetch: "none", model: nil,
                             started: Date(timeIntervalSince1970: 1_700_000_000), readySeconds: nil,
                             records: [RunTrace.Record(location: ChunkLocation(role: .disk, index: 1), chunk: manifest.artifacts[0].chunks[1]?.id,
                                                       offset: 65536, wallSeconds: 0.1, guestSeconds: 0, outcome: .demandMiss, stallSeconds: 0.1)])
        let stored = try await request(server, .POST, "/v1/traces/demo", headers: [("Authorization", "Bearer \(token)")],
                                       body: Array(try trace.encoded()))
        #expect(stored.status == 201)
        var model: Digest?
        for _ in 0..<200 where model == nil {
            try await Task.sleep(nanoseconds: 50_000_000)
            let served = try await request(server, .GET, "/catalog.json")
            let signed = try SignedCatalog.decode(Data(served.bytes), trust: .key(catalogue.key.publicKey))
            model = signed.index.appliances["demo"]?.model
        }
        let digest = try #require(model)
        #expect(try await request(server, .GET, "/" + CatalogObject.model(digest).path).status == 200)
        await server.stop()
    }
}
