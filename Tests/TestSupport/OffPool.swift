import Foundation

/// Runs blocking work (a libcurl upload, waiting for threads that fault on guest pages) on a thread
/// of its own. swift-testing runs every test on the small cooperative pool (2 threads here), and the
/// in-process server's clients need it too: a test that blocks a pool thread can stall another
/// test's connection past the server's 30 s idle timeout.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
