import Benchmarks
import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamClient

/// The client against a real HTTP/2 server: Debian's nginx serving a catalogue directory.
@Suite(.needsNginx) struct NginxTests {
    /// Starts nginx (the suite is enabled only where it is installed).
    private func startNginx(root: String, http2: Bool = true) async throws -> NginxProcess {
        try #require(try await offPool({ try NginxProcess(root: root, http2: http2) }), "nginx is not installed")
    }

    @Test func randomReadsOverHTTP2EqualTheOriginal() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkSize: 16384, chunkCount: 80)
        let nginx = try await startNginx(root: fixture.root)
        defer { nginx.stop() }
        let harness = try ClientHarness(origins: [nginx.url], trust: fixture.trust, cacheRoot: directory.sub("cache"), stallTimeout: ClientHarness.realPeerStall)
        defer { harness.shutdown() }
        let body = try await harness.fetcher.fetch(FetchRequest(url: "\(nginx.url)/catalog.json", priority: .demand,
                                                                mode: .h2cPriorKnowledge, maximumBytes: 1 << 20))
        #expect(body.httpVersion == 2)
        let image = try await harness.openDisk(fixture)
        var generator = SeededGenerator(seed: 7)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<200 {
                let offset = Int.random(in: 0..<image.size, using: &generator)
                let length = Int.random(in: 1...min(40_000, image.size - offset), using: &generator)
                group.addTask {
                    let bytes = try await image.read(offset: offset, length: length)
                    #expect(bytes == Array(fixture.image[offset..<(offset + length)]))
                }
            }
            try await group.waitForAll()
        }
        #expect(try await image.read(offset: 0, length: image.size) == fixture.image)
        #expect(nginx.accessLog.allSatisfy { $0.contains("HTTP/2.0") })
        let link = harness.fetcher.linkEstimate
        #expect(link.bytesReceived > 0)
        #expect(link.rttSeconds != nil)
    }

    /// Counted at the server: with libcurl >= 8 all h2c requests share one connection, many streams
    /// at once (libcurl would open up to 6 connections for concurrent requests it could not
    /// multiplex); with an older libcurl the fetcher's workaround opens one connection per request.
    @Test func h2cRequestsAreMultiplexedOverOneConnection() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkSize: 16384, chunkCount: 60)
        let nginx = try await startNginx(root: fixture.root)
        defer { nginx.stop() }
        let harness = try ClientHarness(origins: [nginx.url], trust: fixture.trust, stallTimeout: ClientHarness.realPeerStall)
        defer { harness.shutdown() }
        let urls = Set(fixture.disk.chunks.compactMap { $0 }.map { "\(nginx.url)/\(CatalogObject.chunk($0.id).path)" })
        let fetcher = harness.fetcher
        try await withThrowingTaskGroup(of: Int.self) { group in
            for url in urls {
                group.addTask {
                    try await fetcher.fetch(FetchRequest(url: url, priority: .prefetch(rank: 0), mode: .h2cPriorKnowledge,
                                                         maximumBytes: 1 << 20)).httpVersion
                }
            }
            for try await version in group { #expect(version == 2) }
        }
        // nginx writes its access log line when a request ends; all have ended here.
        let perConnection = nginx.requestsPerConnection
        #expect(perConnection.values.reduce(0, +) == urls.count)
        if CurlTransfer.priorKnowledgeReuseIsBroken {
            #expect(perConnection.count == urls.count)
        } else {
            #expect(perConnection.count == 1)
            #expect(perConnection.values.first == urls.count)
        }
    }

    @Test func fallsBackToHTTP1WhenTheServerHasNoHTTP2() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 20)
        let nginx = try await startNginx(root: fixture.root, http2: false)
        defer { nginx.stop() }
        let harness = try ClientHarness(origins: [nginx.url], trust: fixture.trust, stallTimeout: ClientHarness.realPeerStall)
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        #expect(try await image.read(offset: 0, length: image.size) == fixture.image)
        #expect(nginx.accessLog.contains { $0.contains("HTTP/1.1") })
    }

    @Test func mirrorIsVerifiedAndIncremental() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 50)
        let nginx = try await startNginx(root: fixture.root)
        defer { nginx.stop() }
        let harness = try ClientHarness(origins: [nginx.url], trust: fixture.trust, stallTimeout: ClientHarness.realPeerStall)
        defer { harness.shutdown() }
        let destination = try CatalogDirectory(root: directory.sub("mirror"), create: true)
        let mirror = CatalogMirror(client: harness.client, destination: destination, logger: ClientHarness.logger)
        let first = try await mirror.run(appliances: nil)
        let distinct = Set(fixture.disk.chunks.compactMap { $0?.id }).count
        #expect(first.chunksFetched == distinct)
        try MirrorCheck.assertComplete(mirror: destination, like: fixture)

        // A new version that shares most chunks: the second run fetches only the new ones.
        let updated = try FixtureCatalog.make(root: fixture.root, key: fixture.key, version: "2", chunkCount: 55, generation: 2)
        let second = try await mirror.run(appliances: ["\(fixture.name)@2"])
        let newChunks = Set(updated.disk.chunks.compactMap { $0?.id }).subtracting(fixture.disk.chunks.compactMap { $0?.id })
        #expect(second.chunksFetched == newChunks.count)
        #expect(second.generation == 2)
        try MirrorCheck.assertComplete(mirror: destination, like: updated)

        // The mirror serves clients: fetch the appliance from it.
        let edge = try await startNginx(root: destination.root)
        defer { edge.stop() }
        let client = try ClientHarness(origins: [edge.url], trust: fixture.trust, stallTimeout: ClientHarness.realPeerStall)
        defer { client.shutdown() }
        let report = try await ApplianceDownloader(loader: client.loader, logger: ClientHarness.logger)
            .download("\(fixture.name)@2", into: directory.sub("out"), progress: nil)
        #expect(report.files.contains("disk.img"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.sub("out/disk.img"))) == Data(updated.image))
        let config = try JSONDecoder().decode(ApplianceConfig.self, from: Data(contentsOf: URL(fileURLWithPath: directory.sub("out/appliance.json"))))
        #expect(config == updated.manifest.config)
    }

    @Test func mirrorRefusesToRollBack() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 8, generation: 3)
        let nginx = try await startNginx(root: fixture.root)
        defer { nginx.stop() }
        let harness = try ClientHarness(origins: [nginx.url], trust: fixture.trust, stallTimeout: ClientHarness.realPeerStall)
        defer { harness.shutdown() }
        // The mirror already holds a newer catalogue (generation 4) from the same publisher.
        let destination = try CatalogDirectory(root: directory.sub("mirror"), create: true)
        let newer = try SignedCatalog(index: CatalogIndex(generation: 4), key: fixture.key).encoded()
        try destination.write(.catalog, data: newer)
        await #expect(throws: ClientError.self) {
            _ = try await CatalogMirror(client: harness.client, destination: destination, logger: ClientHarness.logger).run(appliances: nil)
        }
        #expect(try destination.read(.catalog) == newer)
    }
}

/// Checks a mirror directory object by object.
enum MirrorCheck {
    static func assertComplete(mirror: CatalogDirectory, like fixture: FixtureCatalog) throws {
        #expect(try mirror.read(.catalog) == (try Data(contentsOf: URL(fileURLWithPath: "\(fixture.root)/catalog.json"))))
        #expect(mirror.contains(.manifest(fixture.manifestDigest)))
        for case let ref? in fixture.disk.chunks { #expect(mirror.contains(.chunk(ref.id))) }
        try assertEveryObjectVerifies(mirror)
    }

    /// Every object file in the directory matches its name (no torn or wrong file).
    static func assertEveryObjectVerifies(_ mirror: CatalogDirectory) throws {
        let verifier = try mirror.makeVerifier()
        for kind in CatalogObject.Kind.allCases {
            for object in mirror.objects(of: kind) {
                #expect(throws: Never.self) { try verifier.verify(object, data: try mirror.read(object)) }
            }
        }
    }
}
