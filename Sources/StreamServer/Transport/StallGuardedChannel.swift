import HummingbirdCore
import Logging
import NIOCore

/// Wraps a connection type so that a connection on which nothing is read, nothing is written and
/// nothing drains for `timeout` is closed: stalled clients (never sending, never reading) cannot pin
/// descriptors and buffers forever. Progress in either direction, however slow, keeps a connection open.
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
            // First in the pipeline, so that it sees raw bytes and the socket's writability.
            try channel.pipeline.syncOperations.addHandler(StallGuard(timeout: timeout, logger: logger), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return inner.setup(channel: channel, logger: logger)
    }

    public func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Closes the connection when a whole `timeout` passes without progress: no bytes read, no write
/// handed to the socket and no change of writability (a socket that was full draining again).
///
/// It replaces NIO's `IdleStateHandler`, which watches write completions by attaching a promise and
/// a callback to every write: HTTP/2 writes several buffers per response, and on the event-loop fast
/// path those allocations were a measurable share of the CPU per request. A client that stops
/// reading stops all three kinds of progress here as well: its socket fills, writability stays off,
/// and `ObjectFastPathHandler` reads no further requests that could produce writes.
final class StallGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny

    private let timeout: TimeAmount
    private let logger: Logger
    private var progressed = false
    private var check: Scheduled<Void>?

    init(timeout: TimeAmount, logger: Logger) {
        self.timeout = timeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { schedule(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if check == nil { schedule(context) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        progressed = true
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        progressed = true
        context.fireChannelWritabilityChanged()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        progressed = true
        context.write(data, promise: promise)
    }

    private func schedule(_ context: ChannelHandlerContext) {
        check = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            guard context.channel.isActive else { return }
            if progressed {
                progressed = false
                schedule(context)
                return
            }
            logger.debug("closing a connection that made no progress", metadata: ["remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
            context.close(promise: nil)
        }
    }
}
