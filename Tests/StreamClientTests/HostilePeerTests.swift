import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamClient

/// The client against a peer that lies, truncates, resets, stalls and fails: it never hands out a
/// wrong byte, retries, fails over, and ends with an error that names what went wrong.
@Suite struct HostilePeerTests {
    private static func isChunk(_ path: String) -> Bool { path.hasPrefix("/chunks/") }

    /// Reads the whole disk through LazyImage and compares with the original.
    private func readAll(_ image: LazyImage) async throws -> [UInt8] {
        try await image.read(offset: 0, length: image.size)
    }

    @Test(arguments: [HostilePeer.Fault.wrongBytes, .truncate, .reset, .stall(seconds: 2), .status(503)])
    func transientFaultsAreRetried(_ fault: HostilePeer.Fault) async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        // Every chunk fails once, then is served correctly.
        for ref in Set(fixture.disk.chunks.compactMap { $0 }) {
            let path = "/" + CatalogObject.chunk(ref.id).path
            peer.inject(fault, times: 1) { $0 == path }
        }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        #expect(try await readAll(image) == fixture.image)
        let chunkRequests = peer.requestLog.filter(Self.isChunk)
        let distinct = Set(fixture.disk.chunks.compactMap { $0?.id }).count
        // At least one failed and one good request per chunk (libcurl may also resend once on a dead reused connection).
        #expect(chunkRequests.count >= 2 * distinct)
    }

    @Test func persistentLiesFailOverToTheNextOrigin() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        let liar = try HostilePeer(root: fixture.root)
        let honest = try HostilePeer(root: fixture.root)
        defer { liar.stop(); honest.stop() }
        liar.inject(.wrongBytes, where: Self.isChunk)
        let harness = try ClientHarness(origins: [liar.url, honest.url], trust: fixture.trust)
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        // Chunk by chunk, so each read sees what the previous ones learned about the origins.
        var bytes: [UInt8] = []
        var offset = 0
        while offset < image.size {
            let length = min(fixture.manifest.chunkSize, image.size - offset)
            bytes += try await image.read(offset: offset, length: length)
            offset += length
        }
        #expect(bytes == fixture.image)
        #expect(!honest.requestLog.filter(Self.isChunk).isEmpty)
        // After its first chunk's failed attempts the liar goes to the back: later chunks go straight to the honest origin.
        #expect(liar.requestLog.filter(Self.isChunk).count == ClientHarness.quickRetry.attemptsPerOrigin)
    }

    @Test func nothingGoodLeftEndsWithAClearError() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        let first = try HostilePeer(root: fixture.root)
        let second = try HostilePeer(root: fixture.root)
        defer { first.stop(); second.stop() }
        first.inject(.wrongBytes, where: Self.isChunk)
        second.inject(.status(502), where: Self.isChunk)
        let harness = try ClientHarness(origins: [first.url, second.url], trust: fixture.trust)
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        let chunkIndex = fixture.disk.chunks.firstIndex { $0 != nil }!
        do {
            _ = try await image.read(offset: chunkIndex * fixture.manifest.chunkSize, length: 100)
            Issue.record("a read succeeded although no origin had good bytes")
        } catch let error as ClientError {
            guard case .noUsableOrigin(let object, let attempts) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(object.hasPrefix("chunks/"))
            #expect(attempts.count == 2 * ClientHarness.quickRetry.attemptsPerOrigin)
            #expect(error.description.contains("hashes to"))
            #expect(error.description.contains("HTTP status 502"))
        }
    }

    @Test func forgedOldCatalogueIsRefusedAndTheNextOriginUsed() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), generation: 5)
        // An older catalogue signed by someone else, and one whose payload was edited after signing.
        let forger = SigningKey()
        let old = try SignedCatalog(index: CatalogIndex(generation: 1), key: forger).encoded()
        var tampered = try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: "\(fixture.root)/catalog.json"))) as! [String: Any]
        tampered["payload"] = try JSONEncoder().encode(CatalogIndex(generation: 9)).base64EncodedString()
        let tamperedBytes = try JSONSerialization.data(withJSONObject: tampered)

        let forging = try HostilePeer(root: fixture.root)
        let tampering = try HostilePeer(root: fixture.root)
        let honest = try HostilePeer(root: fixture.root)
        defer { forging.stop(); tampering.stop(); honest.stop() }
        forging.inject(.substitute(old)) { $0 == "/catalog.json" }
        tampering.inject(.substitute(tamperedBytes)) { $0 == "/catalog.json" }
        let harness = try ClientHarness(origins: [forging.url, tampering.url, honest.url], trust: fixture.trust)
        defer { harness.shutdown() }
        let (catalog, _) = try await harness.client.loadCatalog()
        #expect(catalog.index.generation == 5)
        #expect(honest.requestLog.contains("/catalog.json"))

        // With only bad origins the error says why each copy was refused.
        let badOnly = try ClientHarness(origins: [forging.url, tampering.url], trust: fixture.trust)
        defer { badOnly.shutdown() }
        await #expect(throws: ClientError.self) { try await badOnly.client.loadCatalog() }
        do { _ = try await badOnly.client.loadCatalog() } catch {
            #expect("\(error)".contains("not the trusted key"))
            #expect("\(error)".contains("signature does not verify"))
        }
    }

    @Test func staleGenerationIsRefused() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), generation: 3)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust)
        defer { harness.shutdown() }
        do {
            _ = try await harness.client.loadCatalog(minimumGeneration: 4)
            Issue.record("a catalogue older than the minimum generation was accepted")
        } catch {
            #expect("\(error)".contains("refusing to roll back"))
        }
    }

    @Test func unsignedCatalogueNeedsInsecure() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        let unsigned = try SignedCatalog(index: CatalogIndex(generation: 1), key: nil).encoded()
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        peer.inject(.substitute(unsigned)) { $0 == "/catalog.json" }
        let strict = try ClientHarness(origins: [peer.url], trust: fixture.trust)
        defer { strict.shutdown() }
        await #expect(throws: ClientError.self) { try await strict.client.loadCatalog() }
        let insecure = try ClientHarness(origins: [peer.url], trust: .insecure)
        defer { insecure.shutdown() }
        #expect(try await insecure.client.loadCatalog().catalog.index.generation == 1)
    }

    @Test func oversizedBodiesAreCutOff() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let ref = fixture.disk.chunks.compactMap { $0 }.first!
        let path = "/" + CatalogObject.chunk(ref.id).path
        peer.inject(.substitute(Data(repeating: 7, count: ref.stored + 100_000))) { $0 == path }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust)
        defer { harness.shutdown() }
        do {
            _ = try await harness.client.loadChunk(ref, length: fixture.manifest.chunkSize, dictionary: nil,
                                                   ticket: FetchTicket(priority: .demand))
            Issue.record("an oversized body was accepted")
        } catch {
            #expect("\(error)".contains("expected \(ref.stored)"))
        }
    }
}
