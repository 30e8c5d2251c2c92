import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// Per-request limits on an HTTP/1.1 connection or an HTTP/2 stream, between the HTTP codec and
/// Hummingbird's handler:
///
/// - the request-head deadline (HTTP/1.1 only): disarmed when a head arrives, armed again once
///   every request read so far has been answered, so an idle or trickling keep-alive connection
///   is closed by `RequestHeadDeadline`;
/// - the body deadline: an upload body must be complete `--body-timeout` after its head, or the
///   connection (HTTP/2: the stream) is closed — a body trickled below the size cap cannot hold a
///   connection and a task forever;
/// - closing after a refusal: a response the responder marks `Connection: close` (a 413 for a body
///   it did not read to the end) is followed by closing the connection, or on HTTP/2 by resetting
///   the stream, instead of Hummingbird's default of reading and discarding the rest of the body,
///   which for an endless upload never ends. On HTTP/2 the header itself is removed (RFC 9113
///   §8.2.2 forbids connection-specific fields). On HTTP/1.1 the close lingers as nginx's does:
///   the server half-closes, discards what still arrives for at most `lingerTime`, then closes —
///   closing at once with unread body bytes would make the kernel send a reset that can destroy
///   the 413 before the client has read it.
final class HTTPRequestLimits: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    enum Carrier { case http1, http2Stream }

    private let carrier: Carrier
    private let bodyTimeout: TimeAmount
    private let metrics: ServerMetrics
    private let log: RateLimitedLog
    private var headDeadline: RequestHeadDeadline?
    /// Requests whose head was read and whose response has not ended yet.
    private var unanswered = 0
    private var bodyDeadline: Scheduled<Void>?
    private var closeAfterResponse = false
    /// After a refusal on HTTP/1.1: inbound bytes are discarded until the connection closes.
    private var lingering = false
    private var lingerDeadline: Scheduled<Void>?
    static let lingerTime = TimeAmount.seconds(2)

    init(carrier: Carrier, bodyTimeout: TimeAmount, metrics: ServerMetrics, log: RateLimitedLog) {
        self.carrier = carrier
        self.bodyTimeout = bodyTimeout
        self.metrics = metrics
        self.log = log
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if carrier == .http1 { headDeadline = RequestHeadDeadline.of(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancelTimers() }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client finished sending while the close lingers: nothing left to wait for.
        if lingering, let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func cancelTimers() {
        bodyDeadline?.cancel()
        bodyDeadline = nil
        lingerDeadline?.cancel()
        lingerDeadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if lingering { return }
        switch unwrapInboundIn(data) {
        case .head:
            unanswered += 1
            headDeadline?.disarm()
            bodyDeadline?.cancel()
            bodyDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: bodyTimeout) { [self] in
                bodyDeadline = nil
                guard context.channel.isActive else { return }
                metrics.recordConnectionClosedByServer("body_timeout")
                log.notice("body_timeout", "closing a request whose body did not arrive in time", metadata: [
                    "client": "\(ConnectionAdmission.clientAddress(context.channel.parent ?? context.channel))", "limit": "--body-timeout",
                ])
                context.close(promise: nil)
            }
        case .body:
            break
        case .end:
            bodyDeadline?.cancel()
            bodyDeadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var response):
            guard response.headerFields[.connection] == "close" else { break }
            closeAfterResponse = true
            if carrier == .http2Stream {
                response.headerFields[.connection] = nil
                context.write(wrapOutboundOut(.head(response)), promise: promise)
                return
            }
        case .body:
            break
        case .end:
            unanswered -= 1
            if closeAfterResponse {
                // The refused request's body is still arriving: answer, then stop reading it.
                let written = promise ?? context.eventLoop.makePromise()
                context.writeAndFlush(data, promise: written)
                written.futureResult.assumeIsolated().whenComplete { _ in self.closeAfterRefusal(context) }
                return
            }
            if unanswered == 0 { headDeadline?.arm() }
        }
        context.write(data, promise: promise)
    }

    private func closeAfterRefusal(_ context: ChannelHandlerContext) {
        guard carrier == .http1 else {
            context.close(promise: nil)
            return
        }
        lingering = true
        bodyDeadline?.cancel()
        bodyDeadline = nil
        let halfClosed = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: halfClosed)
        halfClosed.futureResult.assumeIsolated().whenFailure { _ in context.close(promise: nil) }
        lingerDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
            context.close(promise: nil)
        }
    }
}
