import ControlAPI
import Dispatch
import Foundation
import Hypervisor
import Logging

/// `--api-socket PATH` for `run` and `boot`: serves the control API of `machine` while `body` runs
/// it, then stops serving and removes the socket.
enum ControlSocket {
    static func serving<T>(at path: String?, machine: Machine, info: InstanceInfo,
                           extraMetrics: @escaping @Sendable () -> [MetricSample] = { [] },
                           logger: Logger, _ body: () throws -> T) throws -> T {
        guard let path else { return try body() }
        let server = ControlAPIServer(socketPath: path, machine: machine, info: info, extraMetrics: extraMetrics, logger: logger)
        try blocking { try await server.start() }
        defer { try? blocking { await server.shutdown() } }
        return try body()
    }

    /// Waits on this (non-pool) thread for async work running on the concurrency pool.
    private static func blocking(_ work: @escaping @Sendable () async throws -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        let outcome = ResultBox()
        Task {
            do { try await work() } catch { outcome.error = error }
            done.signal()
        }
        done.wait()
        if let error = outcome.error { throw error }
    }

    private final class ResultBox: @unchecked Sendable {
        var error: (any Error)?
    }
}
