import NIOCore
import NIOHTTP2

/// Ends an HTTP/2 connection gracefully when the server shuts down (Hummingbird's quiescing helper
/// sends `ChannelShouldQuiesceEvent` to every connection): a GOAWAY naming the last stream the
/// client opened, so it retries nothing that was answered and knows later streams were not, then
/// the close once every open stream has finished. Hummingbird's own HTTP/2 connection manager does
/// this for its pipeline but is not public, so this connection type brings its own.
final class HTTP2GracefulClose: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private var openStreams = 0
    private var lastClientStream = HTTP2StreamID.rootStream
    private var closing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if case .headers = frame.payload, frame.streamID > lastClientStream { lastClientStream = frame.streamID }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is NIOHTTP2StreamCreatedEvent:
            openStreams += 1
        case is StreamClosedEvent:
            openStreams -= 1
            context.fireUserInboundEventTriggered(event)
            if closing, openStreams <= 0 { context.close(promise: nil) }
            return
        case is ChannelShouldQuiesceEvent:
            guard !closing else { return }
            closing = true
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastClientStream, errorCode: .noError, opaqueData: nil))
            context.writeAndFlush(wrapOutboundOut(goAway), promise: nil)
            if openStreams <= 0 { context.close(promise: nil) }
            return
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }
}
