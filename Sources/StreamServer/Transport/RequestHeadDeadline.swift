import Logging
import NIOCore

/// Closes a connection that has not delivered a complete request head within `--head-timeout`.
/// Armed when the connection becomes active; the protocol's handlers disarm it when a head is
/// complete (`HTTP1RequestLimits` for HTTP/1.1, `HTTP2FirstRequestWatch` for HTTP/2) and, on
/// HTTP/1.1, arm it again when the last response is written. Unlike `StallGuard` it does not care
/// whether bytes trickle in: a slowloris client that sends one byte every few seconds makes
/// progress but never a head.
final class RequestHeadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private let metrics: ServerMetrics
    private let log: RateLimitedLog
    private var scheduled: Scheduled<Void>?
    /// Bytes arrived since the deadline was armed: a head may be on its way through the pipeline.
    private var readSinceArmed = false
    private var context: ChannelHandlerContext?

    init(timeout: TimeAmount, metrics: ServerMetrics, log: RateLimitedLog) {
        self.timeout = timeout
        self.metrics = metrics
        self.log = log
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm() }
    }

    func channelActive(context: ChannelHandlerContext) {
        if scheduled == nil { arm() }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        self.context = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
        self.context = nil
    }

    /// False on HTTP/2, which has no half-closed connections (a client ends one with GOAWAY): there a
    /// client that closes its sending side is gone, and waiting for the stall timeout would only
    /// hold its slot.
    var clientMayHalfClose = true

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Half-closes are allowed (an HTTP/1.1 request may be followed by FIN), but a client that
        // closed its sending side without sending anything since the last answer can never send a
        // head: free its slot now rather than at the deadline.
        if let event = event as? ChannelEvent, event == .inputClosed, (scheduled != nil && !readSinceArmed) || !clientMayHalfClose {
            disarm()
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readSinceArmed = true
        context.fireChannelRead(data)
    }

    /// Starts a new full `timeout` for the next request head.
    func arm() {
        guard let context else { return }
        readSinceArmed = false
        scheduled?.cancel()
        scheduled = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            scheduled = nil
            guard context.channel.isActive else { return }
            metrics.recordConnectionClosedByServer("head_timeout")
            log.notice("head_timeout", "closing a connection that sent no complete request head in time", metadata: [
                "client": "\(ConnectionAdmission.clientAddress(context.channel))", "limit": "--head-timeout",
            ])
            context.close(promise: nil)
        }
    }

    /// A head is complete: no deadline until `arm` is called again.
    func disarm() {
        scheduled?.cancel()
        scheduled = nil
    }

    /// The deadline of the connection `context` belongs to (nil if it has none, as in unit pipelines).
    static func of(_ context: ChannelHandlerContext) -> RequestHeadDeadline? {
        try? context.pipeline.syncOperations.handler(type: RequestHeadDeadline.self)
    }
}
