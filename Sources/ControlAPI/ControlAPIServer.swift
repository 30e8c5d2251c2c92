import Foundation
import Hummingbird
import Hypervisor
import Logging
import ServiceLifecycle

/// The control API of one running machine, served by Hummingbird over a Unix socket.
///
/// The socket never exists with wider permissions than 0600: it is bound inside a fresh 0700
/// directory beside `socketPath`, made 0600, and renamed into place. A stale socket left by a
/// crashed VMM is replaced; a live one (something accepts on it) or any other file at that path is
/// refused, so a second VMM never steals a running machine's socket.
public final class ControlAPIServer: Sendable {
    public let socketPath: String
    private let routes: ControlRoutes
    private let logger: Logger
    private let running = Locked<Running?>(nil)

    private struct Running: Sendable {
        let group: ServiceGroup
        let task: Task<Void, any Error>
        let socketInode: UInt64
    }

    public init(socketPath: String, machine: Machine, info: InstanceInfo,
                extraMetrics: @escaping @Sendable () -> [MetricSample] = { [] }, logger: Logger) {
        self.socketPath = socketPath
        routes = ControlRoutes(machine: machine, info: info, extraMetrics: extraMetrics)
        self.logger = logger
    }

    /// Starts serving; returns once the socket is listening at `socketPath` (or throws why it is not).
    public func start() async throws {
        try UnixSocketPath.refuseLiveOrForeign(socketPath)
        let staging = try UnixSocketPath.privateStagingDirectory(beside: socketPath)
        let bindPath = staging + "/api.sock"
        let finalPath = socketPath
        let ready = AsyncSignal()
        let placed = Locked<Result<UInt64, any Error>?>(nil)
        let application = Application(
            router: routes.build(),
            configuration: .init(address: .unixDomainSocket(path: bindPath), serverName: "streamvm-control"),
            onServerRunning: { _ in
                placed.withLock { $0 = Result { try UnixSocketPath.publish(bound: bindPath, at: finalPath, staging: staging) } }
                ready.fire()
            },
            logger: logger)
        let group = ServiceGroup(configuration: .init(services: [application], gracefulShutdownSignals: [], logger: logger))
        let task = Task {
            defer { ready.fire() }
            try await group.run()
        }
        await ready.wait()
        switch placed.withLock({ $0 }) {
        case .success(let inode):
            running.withLock { $0 = Running(group: group, task: task, socketInode: inode) }
        case .failure(let error):
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            UnixSocketPath.removeStaging(staging)
            throw error
        case nil:
            UnixSocketPath.removeStaging(staging)
            do { try await task.value } catch { throw ControlAPIStartError("cannot serve the control API at \(finalPath): \(error)") }
            throw ControlAPIStartError("the control API server at \(finalPath) stopped before it was ready")
        }
    }

    /// Stops serving (requests in flight finish) and removes the socket if it is still ours.
    public func shutdown() async {
        guard let current = running.withLock({ value -> Running? in defer { value = nil }; return value }) else { return }
        await current.group.triggerGracefulShutdown()
        do { try await current.task.value } catch { logger.warning("control API server ended with an error: \(error)") }
        UnixSocketPath.removeIfOurs(socketPath, inode: current.socketInode)
    }
}

/// Why the control API could not start; names the socket path.
public struct ControlAPIStartError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// A one-shot signal between the server's start-up callback and `start()`.
private final class AsyncSignal: Sendable {
    private let state = Locked<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func fire() {
        let waiters = state.withLock { value -> [CheckedContinuation<Void, Never>] in
            guard !value.fired else { return [] }
            value.fired = true
            defer { value.waiters = [] }
            return value.waiters
        }
        waiters.forEach { $0.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { value -> Bool in
                if value.fired { return true }
                value.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}

/// A lock around a value (Hypervisor's `Locked` is internal to it).
final class Locked<Value: Sendable>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()

    init(_ value: Value) { self.value = value }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
