import Glibc
import Logging
import NIOCore

/// Closes the connection when a whole `timeout` passes without progress: no bytes read, no write
/// handed to the socket and no change of writability (a socket that was full draining again). The
/// close is an abort (RST), which frees what the kernel still queues for the client.
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
    private let metrics: ServerMetrics
    private let log: RateLimitedLog
    private var progressed = false
    private var check: Scheduled<Void>?

    init(timeout: TimeAmount, metrics: ServerMetrics, log: RateLimitedLog) {
        self.timeout = timeout
        self.metrics = metrics
        self.log = log
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
            metrics.recordConnectionClosedByServer("stall")
            log.notice("stall", "closing a connection that made no progress", metadata: [
                "client": "\(ConnectionAdmission.clientAddress(context.channel))", "limit": "--stall-timeout",
            ])
            // Abort (RST) instead of a graceful close: a client that stopped reading would otherwise
            // keep the socket's whole send queue (megabytes once autotuned) in the kernel while it
            // drains at the client's pace, long after the server gave up on the connection.
            guard let socket = context.channel as? any SocketOptionProvider else {
                context.close(promise: nil)
                return
            }
            socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in context.close(promise: nil) }
        }
    }
}
