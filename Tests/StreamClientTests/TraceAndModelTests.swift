import Catalog
import Foundation
import Logging
import TestSupport
import Testing
@testable import StreamClient
@testable import StreamServer

@Suite struct TraceAndModelTests {
    /// Writes `model` into the fixture's catalogue and re-signs catalog.json to name it.
    static func publish(model bytes: Data, in fixture: FixtureCatalog, digest: Digest? = nil) throws -> Digest {
        let directory = try CatalogDirectory(root: fixture.root)
        let name = digest ?? Digest.of(bytes)
        try directory.repair(.model(name), data: bytes)
        var index = try #require(try directory.loadCatalog(trust: .insecure)).index
        index.appliances[fixture.name]?.model = name
        index.generation += 1
        try directory.write(.catalog, data: try SignedCatalog(index: index, key: fixture.key).encoded())
        return name
    }

    static func validModel(_ fixture: FixtureCatalog) -> AccessModel {
        let chunks = fixture.disk.chunks.indices.filter { fixture.disk.chunks[$0] != nil }.prefix(3).map { ChunkLocation(role: .disk, index: $0) }
        let bytes = chunks.reduce(0) { $0 + (fixture.disk.chunks[$1.index]?.stored ?? 0) }
        return AccessModel(appliance: fixture.name, version: "1", manifest: fixture.manifestDigest, runs: 1, start: [.init(to: 0, probability: 1)],
                           clusters: [.init(chunks: Array(chunks), bytes: bytes, support: 1, startSeconds: 0, next: [])])
    }

    /// Collects log messages so tests can see that a fallback was reported.
    final class LogCollector: LogHandler, @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            lock.withLock { lines.append("\(event.level) \(event.message) \(event.metadata ?? [:])") }
        }
        var messages: [String] { lock.withLock { lines } }
    }

    func loadModel(_ fixture: FixtureCatalog, directory: TemporaryDirectory) async throws -> (AccessModel?, [String]) {
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust)
        defer { harness.shutdown() }
        let collector = LogCollector()
        let logger = Logger(label: "test") { _ in collector }
        let (catalog, _) = try await harness.client.loadCatalog()
        let model = await ModelSource.load(client: harness.client, index: catalog.index, appliance: fixture.name, manifest: fixture.manifest,
                                           manifestDigest: fixture.manifestDigest, logger: logger)
        return (model, collector.messages)
    }

    @Test func aValidModelIsUsedAndBadOnesFallBackWithAWarning() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        // No model published yet.
        var (model, log) = try await loadModel(fixture, directory: directory)
        #expect(model == nil)
        #expect(log.contains { $0.contains("no access-order model") })

        let good = Self.validModel(fixture)
        _ = try Self.publish(model: try good.encoded(), in: fixture)
        (model, _) = try await loadModel(fixture, directory: directory)
        #expect(model == good)

        // Stale: learned for another manifest.
        var stale = good
        stale.manifest = Digest.of(Data("older version".utf8))
        _ = try Self.publish(model: try stale.encoded(), in: fixture)
        (model, log) = try await loadModel(fixture, directory: directory)
        #expect(model == nil)
        #expect(log.contains { $0.hasPrefix("warning") && $0.contains("stale") })

        // Corrupt: the bytes on the origin do not match the digest the catalogue names.
        _ = try Self.publish(model: Data("{\"format\": 1, \"garbage\": true}".utf8), in: fixture, digest: try good.digest)
        (model, log) = try await loadModel(fixture, directory: directory)
        #expect(model == nil)
        #expect(log.contains { $0.hasPrefix("warning") && $0.contains("falling back") })

        // Well-formed JSON under its own digest, but not a model.
        _ = try Self.publish(model: Data("{\"format\": 1}".utf8), in: fixture)
        (model, log) = try await loadModel(fixture, directory: directory)
        #expect(model == nil)
        #expect(log.contains { $0.hasPrefix("warning") && $0.contains("malformed") })
    }

    @Test func recorderTellsPrefetchHitsFromDemandMissesAndMeasuresGuestTime() {
        let recorder = TraceRecorder()
        final class Heard: @unchecked Sendable {
            let lock = NSLock()
            var waits: [Bool] = []
        }
        let heard = Heard()
        recorder.addListener { _, waited in heard.lock.withLock { heard.waits.append(waited) } }
        let chunk = Digest.of(Data("c".utf8))
        recorder.notePrefetched(ChunkLocation(role: .disk, index: 1))
        recorder.guestStarted()
        recorder.record(FirstAccess(role: .disk, chunkIndex: 1, chunk: chunk, offset: 4096, seconds: 0, source: .cache, stallSeconds: 0))
        recorder.record(FirstAccess(role: .disk, chunkIndex: 2, chunk: chunk, offset: 8192, seconds: 0, source: .cache, stallSeconds: 0))
        recorder.record(FirstAccess(role: .disk, chunkIndex: 3, chunk: chunk, offset: 12288, seconds: 0, source: .fetched, stallSeconds: 0.25))
        recorder.record(FirstAccess(role: .disk, chunkIndex: 4, chunk: nil, offset: 16384, seconds: 0, source: .zero, stallSeconds: 0))
        recorder.ready()
        let trace = recorder.trace(appliance: "app", version: "1", manifest: chunk, prefetch: .vtube, model: nil)
        #expect(trace.records.map(\.outcome) == [.prefetchHit, .cached, .demandMiss, .zero])
        #expect(trace.records.allSatisfy { $0.guestSeconds != nil && $0.guestSeconds! <= $0.wallSeconds })
        #expect(trace.records[2].stallSeconds == 0.25)
        #expect(trace.readySeconds != nil)
        #expect(heard.lock.withLock { heard.waits } == [false, false, true, false])
        let summary = recorder.stallSummary()
        #expect(summary.count == 1 && summary.seconds == 0.25 && summary.afterReadyCount == 0)
        #expect((try? RunTrace.decode(try trace.encoded(), file: "t"))?.records == trace.records)
    }

    /// Memory installed ahead of the guest is traced (the model keeps it) but does not reach the
    /// listeners: it says nothing about where the guest is, so it must not move the prefetcher.
    @Test func installedChunksAreTracedWithoutTellingTheListeners() {
        let recorder = TraceRecorder()
        final class Heard: @unchecked Sendable {
            let lock = NSLock()
            var locations: [ChunkLocation] = []
        }
        let heard = Heard()
        recorder.addListener { location, _ in heard.lock.withLock { heard.locations.append(location) } }
        recorder.notePrefetched(ChunkLocation(role: .memory, index: 7))
        recorder.guestStarted()
        recorder.recordInstalled(FirstAccess(role: .memory, chunkIndex: 7, chunk: Digest.of(Data("m".utf8)), offset: 7 << 16,
                                             seconds: 0, source: .cache, stallSeconds: 0))
        recorder.record(FirstAccess(role: .memory, chunkIndex: 9, chunk: nil, offset: 9 << 16, seconds: 0, source: .zero, stallSeconds: 0))
        let trace = recorder.trace(appliance: "app", version: "1", manifest: Digest.of(Data("x".utf8)), prefetch: .vtube, model: nil)
        #expect(trace.records.map(\.location.index) == [7, 9])
        #expect(trace.records.first?.outcome == .prefetchHit)
        #expect(heard.lock.withLock { heard.locations } == [ChunkLocation(role: .memory, index: 9)])
    }

    @Test func tracesUploadWithTheTokenAndAreRefusedWithoutIt() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        let tokenFile = directory.sub("token")
        try "trace-token-0123456789abcdef\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let wrongFile = directory.sub("wrong")
        try "wrong-token-0123456789abcdef".write(toFile: wrongFile, atomically: true, encoding: .utf8)
        var options = CatalogServer.Options(catalog: fixture.root)
        options.port = 0
        options.scrubEnabled = false
        options.traceTokenFile = tokenFile
        options.traceDirectory = directory.sub("traces")
        var logger = Logger(label: "test.server")
        logger.logLevel = .critical
        let server = try CatalogServer(options: options, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let task = Task(executorPreference: DedicatedThreadsExecutor.shared) { try await server.run { continuation.yield($0) } }
        defer { Task { await server.shutdown() } }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        let origin = try Origin("http://127.0.0.1:\(port)")

        let trace = RunTrace(appliance: fixture.name, version: "1", manifest: fixture.manifestDigest, prefetch: "none", model: nil,
                             started: Date(timeIntervalSince1970: 1_700_000_000), readySeconds: 1,
                             records: [.init(location: .init(role: .disk, index: 0), chunk: fixture.disk.chunks[0]?.id, offset: 0,
                                             wallSeconds: 0.1, guestSeconds: 0, outcome: .demandMiss, stallSeconds: 0.1)])
        let refused = try TraceUploader(origin: origin, tokenFile: wrongFile)
        await #expect(throws: ClientError.self) { try await Task.detached { try refused.upload(trace) }.value }
        let uploader = try TraceUploader(origin: origin, tokenFile: tokenFile)
        let answer = try await Task.detached { try uploader.upload(trace) }.value
        #expect(answer.contains("stored trace"))
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.sub("traces") + "/" + fixture.name)
        #expect(files.count == 1)
        let stored = try RunTrace.decode(try Data(contentsOf: URL(fileURLWithPath: directory.sub("traces") + "/" + fixture.name + "/" + files[0])), file: "stored")
        #expect(stored == trace)
        await server.shutdown()
        _ = try? await task.value
    }
}
