import Catalog
import Foundation
import Logging
@testable import StreamClient

/// Builds the real client stack (fetcher, catalogue client, cache, loader) for a test.
struct ClientHarness {
    let fetcher: Fetcher
    let client: CatalogClient
    let cache: ChunkCache?
    let loader: ChunkRouter

    static let logger: Logger = {
        var logger = Logger(label: "streamvm.test")
        logger.logLevel = .critical
        return logger
    }()

    /// Stall timeout against real servers (nginx, `streamvm serve`), where no test injects a stall: a
    /// debug build on a loaded 2-core host can take seconds to answer, which is not a fault.
    static let realPeerStall = 20.0

    /// Retries are quick in tests; the stall timeout is short so stall tests finish promptly.
    static let quickRetry = RetryPolicy(attemptsPerOrigin: 3, backoffSeconds: [0.01, 0.02])

    init(origins: [String], trust: SignedCatalog.Trust, cacheRoot: String? = nil, cacheCapacity: Int = 1 << 30,
         retry: RetryPolicy = ClientHarness.quickRetry, stallTimeout: Double = 0.5, caFile: String? = nil,
         rollback: RollbackProtection? = nil) throws {
        var configuration = Fetcher.Configuration()
        configuration.stallTimeoutSeconds = stallTimeout
        configuration.caFile = caFile
        fetcher = try Fetcher(configuration: configuration, logger: Self.logger)
        client = try CatalogClient(origins: origins.map { try Origin($0) }, trust: trust, fetcher: fetcher,
                                   retry: retry, rollbackProtection: rollback, logger: Self.logger)
        cache = try cacheRoot.map { try ChunkCache(root: $0, capacityBytes: cacheCapacity, logger: Self.logger) }
        loader = ChunkRouter(client: client, cache: cache)
    }

    func shutdown() { fetcher.shutdown() }

    /// Opens the fixture's disk through the full stack.
    func openDisk(_ fixture: FixtureCatalog,
                  traceSink: (any AccessTraceSink)? = nil) async throws -> LazyImage {
        let (catalog, _) = try await client.loadCatalog()
        let resolved = try catalog.index.resolve(fixture.name)
        let (manifest, _) = try await client.loadManifest(resolved.entry.manifest)
        return try await LazyImage.open(manifest: manifest, role: .disk, loader: loader, traceSink: traceSink)
    }
}

/// Collects first accesses for assertions.
final class RecordingTraceSink: AccessTraceSink, @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [FirstAccess] = []
    func record(_ access: FirstAccess) {
        lock.lock()
        recorded.append(access)
        lock.unlock()
    }
    var accesses: [FirstAccess] {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }
}
