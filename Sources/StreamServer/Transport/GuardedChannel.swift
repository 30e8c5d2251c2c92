import HummingbirdCore
import Logging
import NIOCore

/// What every connection of one server shares to enforce `ConnectionLimits`.
struct ConnectionGuards: Sendable {
    let limits: ConnectionLimits
    let stallTimeout: TimeAmount
    let counter: ConnectionCounter
    let metrics: ServerMetrics
    let log: RateLimitedLog

    init(limits: ConnectionLimits, stallTimeout: Duration, metrics: ServerMetrics, logger: Logger) {
        self.limits = limits
        self.stallTimeout = stallTimeout.timeAmount
        self.counter = ConnectionCounter(limits: limits)
        self.metrics = metrics
        self.log = RateLimitedLog(logger: logger)
    }

    /// The handler an HTTP/1.1 connection or HTTP/2 stream gets between its codec and Hummingbird.
    func requestLimits(_ carrier: HTTPRequestLimits.Carrier) -> HTTPRequestLimits {
        HTTPRequestLimits(carrier: carrier, bodyTimeout: limits.bodyTimeout.timeAmount, metrics: metrics, log: log)
    }
}

/// Wraps a connection type with the guards every accepted connection gets, first in its pipeline
/// so that they see raw bytes and the socket's writability:
///
///     ConnectionAdmission → RequestHeadDeadline → StallGuard → [the wrapped connection's handlers]
///
/// Admission refuses connections beyond the total and per-address caps; the head deadline closes
/// connections that send no complete request head in time (slowloris); the stall guard closes
/// connections that make no progress at all (docs/SECURITY.md lists every limit).
public struct GuardedChannel<Inner: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Inner.Value

    let inner: Inner
    let guards: ConnectionGuards

    init(_ inner: Inner, guards: ConnectionGuards) {
        self.inner = inner
        self.guards = guards
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            // A failed setup would end the server's accept loop, so the handlers added here never
            // fail a connection: a refused one is closed once it is active.
            try channel.pipeline.syncOperations.addHandlers([
                ConnectionAdmission(counter: guards.counter, metrics: guards.metrics, log: guards.log),
                RequestHeadDeadline(timeout: guards.limits.headTimeout.timeAmount, metrics: guards.metrics, log: guards.log),
                StallGuard(timeout: guards.stallTimeout, metrics: guards.metrics, log: guards.log),
            ], position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return inner.setup(channel: channel, logger: logger)
    }

    public func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}
