import Catalog
import Foundation
import Synchronization
import TestSupport
import Testing
@testable import StreamClient

/// `boot` and `fetch` remember the newest catalogue generation this host accepted per signing key
/// and refuse an older, validly signed one (a stale mirror, a replay), unless the operator allows it.
@Suite struct RollbackProtectionTests {
    /// The fixture's catalogue re-signed by its own key at another generation: what a stale mirror
    /// that kept an old (genuine) catalog.json serves.
    static func catalogue(_ fixture: FixtureCatalog, generation: Int) throws -> Data {
        var index = try #require(try CatalogDirectory(root: fixture.root).loadCatalog(trust: fixture.trust)).index
        index.generation = generation
        return try SignedCatalog(index: index, key: fixture.key).encoded()
    }

    @Test func anOlderGenerationFromTheSameKeyIsRefusedNamingBothGenerations() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), generation: 5)
        let seen = SeenGenerations(directory: directory.sub("state"))
        let current = try HostilePeer(root: fixture.root)
        let stale = try HostilePeer(root: fixture.root)
        defer { current.stop(); stale.stop() }
        stale.inject(.substitute(try Self.catalogue(fixture, generation: 3))) { $0 == "/catalog.json" }

        // First run on this host: generation 5 is accepted and remembered.
        let first = try ClientHarness(origins: [current.url], trust: fixture.trust, rollback: RollbackProtection(seen: seen))
        defer { first.shutdown() }
        #expect(try await first.client.loadCatalog().catalog.index.generation == 5)
        #expect(try seen.highest(for: fixture.key.publicKey) == 5)

        // A later run that only reaches the stale mirror is refused, with both generations named.
        let later = try ClientHarness(origins: [stale.url], trust: fixture.trust, rollback: RollbackProtection(seen: seen))
        defer { later.shutdown() }
        do {
            _ = try await later.client.loadCatalog()
            Issue.record("generation 3 was accepted after generation 5")
        } catch {
            #expect("\(error)".contains("generation 3, older than generation 5"), "\(error)")
            #expect("\(error)".contains("--allow-rollback"))
        }
        // Without the host's memory (as before this change) the stale catalogue would be taken.
        let forgetful = try ClientHarness(origins: [stale.url], trust: fixture.trust)
        defer { forgetful.shutdown() }
        #expect(try await forgetful.client.loadCatalog().catalog.index.generation == 3)

        // The stale mirror counts as a failed origin: the next one serves the current catalogue.
        let failover = try ClientHarness(origins: [stale.url, current.url], trust: fixture.trust, rollback: RollbackProtection(seen: seen))
        defer { failover.shutdown() }
        #expect(try await failover.client.loadCatalog().catalog.index.generation == 5)

        // The operator's override takes the old catalogue; the record still holds the newest.
        let allowed = try ClientHarness(origins: [stale.url], trust: fixture.trust,
                                        rollback: RollbackProtection(seen: seen, allowRollback: true))
        defer { allowed.shutdown() }
        #expect(try await allowed.client.loadCatalog().catalog.index.generation == 3)
        #expect(try seen.highest(for: fixture.key.publicKey) == 5)
    }

    @Test func generationsAreRememberedPerSigningKey() async throws {
        let directory = try TemporaryDirectory()
        let high = try FixtureCatalog.make(root: directory.sub("high"), generation: 9)
        let low = try FixtureCatalog.make(root: directory.sub("low"), generation: 2)
        let seen = SeenGenerations(directory: directory.sub("state"))
        let (highPeer, lowPeer) = (try HostilePeer(root: high.root), try HostilePeer(root: low.root))
        defer { highPeer.stop(); lowPeer.stop() }
        for (fixture, peer) in [(high, highPeer), (low, lowPeer)] {
            let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, rollback: RollbackProtection(seen: seen))
            defer { harness.shutdown() }
            _ = try await harness.client.loadCatalog()
        }
        // Another publisher's generation 2 is not held against it by this host's 9 from a different key.
        #expect(try seen.highest(for: high.key.publicKey) == 9)
        #expect(try seen.highest(for: low.key.publicKey) == 2)
        #expect(try seen.highest(for: SigningKey().publicKey) == nil)
    }

    @Test func fetchRefusesARolledBackCatalogue() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), generation: 4)
        let seen = SeenGenerations(directory: directory.sub("state"))
        try seen.record(6, for: fixture.key.publicKey)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, rollback: RollbackProtection(seen: seen))
        defer { harness.shutdown() }
        do {
            _ = try await ApplianceDownloader(loader: harness.loader, logger: ClientHarness.logger).download(fixture.name, into: directory.sub("out"))
            Issue.record("fetch accepted generation 4 after 6")
        } catch {
            #expect("\(error)".contains("generation 4, older than generation 6"), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: directory.sub("out/disk.img")))
        #expect(!peer.requestLog.contains { $0.hasPrefix("/manifests/") })
    }

    /// Many writers at once (threads with their own descriptors, as separate processes would have):
    /// flock serialises their read-raise-write, so the record ends at each key's maximum.
    @Test func concurrentRecordsLoseNoUpdate() async throws {
        let directory = try TemporaryDirectory()
        let seen = SeenGenerations(directory: directory.sub("state"))
        let keys = (0..<4).map { _ in SigningKey().publicKey }
        let writers = 8, perWriter = 40
        let failures = try await offPool { () -> [String] in
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: writers) { writer in
                // Each writer records its own increasing generations, interleaved across keys.
                let own = SeenGenerations(directory: directory.sub("state"))
                for step in 0..<perWriter {
                    let key = keys[(writer + step) % keys.count]
                    do { try own.record(step * writers + writer, for: key) } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
            return failures.withLock { $0 }
        }
        #expect(failures.isEmpty, "\(failures)")
        for (index, key) in keys.enumerated() {
            // The highest generation any writer recorded for this key.
            let expected = (0..<writers).flatMap { writer in
                (0..<perWriter).filter { (writer + $0) % keys.count == index }.map { $0 * writers + writer }
            }.max()
            #expect(try seen.highest(for: key) == expected)
        }
        // The record was replaced atomically: no temp files are left beside it.
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.sub("state"))
        #expect(names == [SeenGenerations.fileName])
    }

    @Test func aDamagedRecordIsAnErrorNamingItsFileBeforeAnyOriginIsAsked() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), generation: 2)
        let seen = SeenGenerations(directory: directory.sub("state"))
        try FileManager.default.createDirectory(atPath: seen.directory, withIntermediateDirectories: true)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        for damage in [#"{"format":"streamvm-seen-generations-v1","generations":{"AAAA":-4}}"#, "{trunc", #"{"format":"other","generations":{}}"#] {
            try Data(damage.utf8).write(to: URL(fileURLWithPath: seen.path))
            let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, rollback: RollbackProtection(seen: seen))
            defer { harness.shutdown() }
            do {
                _ = try await harness.client.loadCatalog()
                Issue.record("a damaged record was ignored: \(damage)")
            } catch let error as ClientError {
                #expect(error.description.hasPrefix(seen.path), "\(error)")
            }
        }
        #expect(peer.requestLog.isEmpty)
    }

    @Test func anUnsignedCatalogueIsNotRecorded() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), generation: 7)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        var index = try #require(try CatalogDirectory(root: fixture.root).loadCatalog(trust: fixture.trust)).index
        index.generation = 7
        peer.inject(.substitute(try SignedCatalog(index: index, key: nil).encoded())) { $0 == "/catalog.json" }
        let seen = SeenGenerations(directory: directory.sub("state"))
        let harness = try ClientHarness(origins: [peer.url], trust: .insecure, rollback: RollbackProtection(seen: seen))
        defer { harness.shutdown() }
        #expect(try await harness.client.loadCatalog().catalog.signer == nil)
        #expect(try seen.all().isEmpty)
    }
}
