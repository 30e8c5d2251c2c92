import Catalog
import Foundation
import Logging
import Testing
@testable import StreamServer

@Suite struct IntegrityTests {
    @Test func objectCorruptBeforeFirstReadIsRefused() async throws {
        let catalogue = try TestCatalogue()
        let chunk = catalogue.chunks[0]
        var damaged = chunk.frame
        damaged[damaged.count / 2] ^= 0xff
        try Data(damaged).write(to: URL(fileURLWithPath: catalogue.path(chunk.object)))
        let server = try await RunningServer.start(catalogue: catalogue)
        let reply = try await request(server, .GET, "/" + chunk.object.path)
        #expect(reply.status == 500)
        #expect(reply.bytes != damaged)
        #expect(try await request(server, .HEAD, "/" + chunk.object.path).status == 500)
        let metrics = try await request(server, .GET, "/metrics")
        #expect(metrics.text.contains("streamvm_http_errors_total{kind=\"corrupt_object\"} 2"))
        await server.stop()
    }

    /// A file rewritten after it was verified and cached is verified again, even when the new bytes
    /// have the same size and the attacker restores the modification time.
    @Test func objectChangedAfterVerificationIsReverified() async throws {
        let catalogue = try TestCatalogue()
        let chunk = catalogue.chunks[1]
        let path = catalogue.path(chunk.object)
        let server = try await RunningServer.start(catalogue: catalogue)
        #expect(try await request(server, .GET, "/" + chunk.object.path).status == 200)
        let before = try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as! Date
        var damaged = chunk.frame
        damaged[7] ^= 0x01
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.write(contentsOf: Data(damaged))
        try handle.close()
        try FileManager.default.setAttributes([.modificationDate: before], ofItemAtPath: path)
        let reply = try await request(server, .GET, "/" + chunk.object.path)
        #expect(reply.status == 500)
        // Restoring the right bytes makes the object servable again.
        try Data(chunk.frame).write(to: URL(fileURLWithPath: path))
        let restored = try await request(server, .GET, "/" + chunk.object.path)
        #expect(restored.status == 200)
        #expect(restored.bytes == chunk.frame)
        await server.stop()
    }

    @Test func tamperedCatalogueIsRefused() async throws {
        let catalogue = try TestCatalogue()
        var text = String(decoding: try catalogue.directory.read(.catalog), as: UTF8.self)
        // Re-sign nothing: swap the payload for another generation's payload, keeping the old signature.
        let other = try SignedCatalog.decode(catalogue.catalogBytes(generation: 7, signedBy: catalogue.key), trust: .insecure)
        let original = try SignedCatalog.decode(try catalogue.directory.read(.catalog), trust: .insecure)
        text = text.replacingOccurrences(of: original.payload.base64EncodedString(), with: other.payload.base64EncodedString())
        try text.write(toFile: catalogue.path(.catalog), atomically: true, encoding: .utf8)
        let server = try await RunningServer.start(catalogue: catalogue)
        #expect(try await request(server, .GET, "/catalog.json").status == 500)
        await server.stop()
    }

    @Test func catalogueSignedByAnotherKeyIsRefusedUnderTrust() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue) { $0.trustedKey = SigningKey().publicKey }
        #expect(try await request(server, .GET, "/catalog.json").status == 500)
        await server.stop()
        let trusting = try await RunningServer.start(catalogue: catalogue) { $0.trustedKey = catalogue.key.publicKey }
        #expect(try await request(trusting, .GET, "/catalog.json").status == 200)
        await trusting.stop()
    }

    @Test func scrubberFindsCorruptionNobodyAskedFor() async throws {
        let catalogue = try TestCatalogue(chunkCount: 3)
        let victim = catalogue.chunks[2]
        var damaged = victim.frame
        damaged[damaged.count - 3] ^= 0x40
        try Data(damaged).write(to: URL(fileURLWithPath: catalogue.path(victim.object)))
        let logger = Logger(label: "test.scrub")
        let store = VerifiedObjectStore(directory: catalogue.directory, trust: .insecure, logger: logger)
        let scrubber = ObjectScrubber(store: store, pace: .init(bytesPerSecond: 0), metrics: ServerMetrics(), logger: logger)
        let report = await scrubber.scrubOnce()
        // catalog.json, one manifest and three chunks.
        #expect(report.checked == 5)
        #expect(report.corrupt == [victim.object])
        guard case .corrupt = try await store.lookup(victim.object) else {
            Issue.record("the scrubbed corrupt object is not refused")
            return
        }
    }
}
