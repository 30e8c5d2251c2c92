import Catalog
import Foundation
import Logging
import StreamServer
import TestSupport
import Testing
@testable import StreamClient

/// The client against `streamvm serve` (the lead's Hummingbird `CatalogServer`, started in-process
/// on a loopback port) serving a published catalogue: over h2c with prior knowledge and over h2 with
/// TLS, random reads through `LazyImage` equal the original bytes.
@Suite struct StreamServeTests {
    /// A `CatalogServer` on an ephemeral port, stopped gracefully.
    private final class RunningCatalogServer: @unchecked Sendable {
        let port: Int
        private let server: CatalogServer
        private let task: Task<Void, any Error>

        static func start(catalog: String, traces: String, tls: TestCertificate? = nil) async throws -> RunningCatalogServer {
            var options = CatalogServer.Options(catalog: catalog)
            options.port = 0
            options.scrubEnabled = false
            options.traceDirectory = traces
            options.tlsCertificate = tls?.certificate
            options.tlsKey = tls?.key
            var logger = Logger(label: "test.serve")
            logger.logLevel = .critical
            let server = try CatalogServer(options: options, logger: logger)
            let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
            let task = Task(executorPreference: DedicatedThreadsExecutor.shared) { try await server.run { port in continuation.yield(port) } }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            return RunningCatalogServer(port: port, server: server, task: task)
        }

        private init(port: Int, server: CatalogServer, task: Task<Void, any Error>) {
            self.port = port
            self.server = server
            self.task = task
        }

        func stop() async {
            await server.shutdown()
            _ = try? await task.value
        }
    }

    /// A catalogue whose chunks need the appliance's dictionary: the client fetches the dictionary,
    /// verifies it and decompresses every chunk with it.
    @Test func aDictionaryCompressedCatalogueReadsBackExactly() async throws {
        let directory = try TemporaryDirectory()
        let published = try await PublishedApplianceTests.publish(in: directory) { SimilarRecords.disk(bytes: $0 * 64) }
        let server = try await RunningCatalogServer.start(catalog: published.catalogRoot, traces: directory.sub("traces"))
        do {
            let harness = try ClientHarness(origins: ["http://127.0.0.1:\(server.port)"], trust: .key(published.key.publicKey),
                                            cacheRoot: directory.sub("cache"), stallTimeout: ClientHarness.realPeerStall)
            defer { harness.shutdown() }
            let (catalog, _) = try await harness.client.loadCatalog()
            let (manifest, _) = try await harness.client.loadManifest(try catalog.index.resolve("demo").entry.manifest)
            #expect(!manifest.dictionaries.isEmpty, "the publisher chose a dictionary for this disk")
            let disk = try #require(manifest.artifact(.disk))
            #expect(disk.chunks.contains { $0?.dict != nil }, "chunks are compressed with it")
            try await PublishedApplianceTests.assertRandomReadsEqual(published.disk, harness: harness, seed: 13)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test func randomReadsOverH2CEqualTheOriginal() async throws {
        let directory = try TemporaryDirectory()
        let published = try await PublishedApplianceTests.publish(in: directory)
        let server = try await RunningCatalogServer.start(catalog: published.catalogRoot, traces: directory.sub("traces"))
        do {
            let url = "http://127.0.0.1:\(server.port)"
            let harness = try ClientHarness(origins: [url], trust: .key(published.key.publicKey), cacheRoot: directory.sub("cache"),
                                            stallTimeout: ClientHarness.realPeerStall)
            defer { harness.shutdown() }
            let body = try await harness.fetcher.fetch(FetchRequest(url: "\(url)/catalog.json", priority: .demand,
                                                                    mode: .h2cPriorKnowledge, maximumBytes: 1 << 20))
            #expect(body.httpVersion == 2)
            try await PublishedApplianceTests.assertRandomReadsEqual(published.disk, harness: harness, seed: 11)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test(.needsOpenSSL) func randomReadsOverTLSEqualTheOriginal() async throws {
        let directory = try TemporaryDirectory()
        let certificate = try await TestCertificate.make(in: directory.path)
        let published = try await PublishedApplianceTests.publish(in: directory)
        let server = try await RunningCatalogServer.start(catalog: published.catalogRoot, traces: directory.sub("traces"), tls: certificate)
        do {
            let url = "https://127.0.0.1:\(server.port)"
            let harness = try ClientHarness(origins: [url], trust: .key(published.key.publicKey), cacheRoot: directory.sub("cache"),
                                            stallTimeout: ClientHarness.realPeerStall, caFile: certificate.certificate)
            defer { harness.shutdown() }
            let body = try await harness.fetcher.fetch(FetchRequest(url: "\(url)/catalog.json", priority: .demand,
                                                                    mode: .h2OverTLS, maximumBytes: 1 << 20))
            #expect(body.httpVersion == 2)
            try await PublishedApplianceTests.assertRandomReadsEqual(published.disk, harness: harness, seed: 12)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
