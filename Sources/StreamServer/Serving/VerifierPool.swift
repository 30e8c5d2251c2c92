import Catalog
import NIOConcurrencyHelpers

/// Lends out `ObjectVerifier`s, which hold a zstd context and are not thread-safe, so that many
/// verifications can run at once on a thread pool without sharing one.
final class VerifierPool: @unchecked Sendable {
    private let directory: CatalogDirectory
    private let lock = NIOLock()
    /// Guarded by `lock`.
    private var idle: [ObjectVerifier] = []
    /// More idle verifiers than this are dropped rather than kept.
    private let maximumIdle: Int

    init(directory: CatalogDirectory, maximumIdle: Int = 8) {
        self.directory = directory
        self.maximumIdle = maximumIdle
    }

    /// Runs `body` with a verifier nobody else holds. Blocking; call it from a thread pool.
    func withVerifier<T>(_ body: (ObjectVerifier) throws -> T) throws -> T {
        let verifier = try lock.withLock { idle.popLast() } ?? directory.makeVerifier()
        defer {
            lock.withLock { if idle.count < maximumIdle { idle.append(verifier) } }
        }
        return try body(verifier)
    }
}
