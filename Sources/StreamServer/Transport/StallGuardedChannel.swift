import HummingbirdCore
import Logging
import NIOCore

/// Wraps a connection type so that a connection on which nothing is read and no write completes for
/// `timeout` is closed: stalled clients (never sending, never reading) cannot pin descriptors and
/// buffers forever. Progress in either direction, however slow, keeps a connection open.
public struct StallGuardedChannel<Inner: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Inner.Value

    let inner: Inner
    let timeout: TimeAmount

    public init(_ inner: Inner, timeout: TimeAmount) {
        self.inner = inner
        self.timeout = timeout
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            // First in the pipeline, so they see raw bytes and raw write completions.
            try channel.pipeline.syncOperations.addHandlers([IdleStateHandler(allTimeout: timeout), StallCloser(logger: logger)], position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return inner.setup(channel: channel, logger: logger)
    }

    public func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Closes the connection when `IdleStateHandler` reports that it made no progress.
final class StallCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .all? = event as? IdleStateHandler.IdleStateEvent {
            logger.debug("closing a connection that made no progress", metadata: ["remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
