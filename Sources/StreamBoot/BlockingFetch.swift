import Dispatch
import Foundation
import StreamClient

/// Runs a streamed read for a caller that must answer synchronously (a vCPU thread emulating
/// virtio-blk, a userfaultfd handler thread serving a page). A read that fails is retried until a
/// deadline, so a link that drops stalls the guest instead of failing it; after the deadline the
/// last error is thrown.
struct BlockingFetch: Sendable {
    /// Pause between retries of a failed read while the deadline allows.
    static let retryPauseSeconds = 0.5

    var deadlineSeconds: Double

    /// Runs `operation` (which blocks this thread itself) until it succeeds, the deadline passes
    /// (the last error is thrown), or it fails with an error retrying cannot fix (`outOfRange`,
    /// `overlayMismatch`).
    func retrying<T>(_ operation: () throws -> T) throws -> T {
        let start = DispatchTime.now().uptimeNanoseconds
        while true {
            do {
                return try operation()
            } catch let error as ClientError {
                if case .outOfRange = error { throw error }
                if case .overlayMismatch = error { throw error }
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                guard elapsed < deadlineSeconds else { throw error }
                // One last attempt right at the deadline.
                Thread.sleep(forTimeInterval: min(Self.retryPauseSeconds, deadlineSeconds - elapsed))
            }
        }
    }

    /// `retrying` for an async read: it runs as a task and this (non-pool) thread waits for it.
    func run<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
        try retrying { try Self.wait(for: operation) }
    }

    /// Runs `operation` as a task and blocks this (non-pool) thread until it finishes.
    static func wait<T: Sendable>(for operation: @escaping @Sendable () async throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await operation()) } catch { result = .failure(error) }
            box.set(result)
            done.signal()
        }
        done.wait()
        return try box.take().get()
    }
}

/// Carries a task's result to the thread waiting for it (the semaphore orders the accesses).
private final class ResultBox<T>: @unchecked Sendable {
    private var result: Result<T, any Error>?
    func set(_ value: Result<T, any Error>) { result = value }
    func take() -> Result<T, any Error> { result! }
}
