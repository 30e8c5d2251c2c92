import NIOCore
import NIOHTTP2

/// Tells the connection's `RequestHeadDeadline` that this is HTTP/2 (a client's FIN ends it) and
/// disarms it at the first HEADERS frame, then removes itself:
/// an HTTP/2 client must send its preface, SETTINGS and a first request within `--head-timeout`.
/// Later streams are bounded by SETTINGS_MAX_CONCURRENT_STREAMS, the body deadline per stream and
/// the stall guard.
final class HTTP2FirstRequestWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame

    func handlerAdded(context: ChannelHandlerContext) {
        RequestHeadDeadline.of(context)?.clientMayHalfClose = false
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .headers = unwrapInboundIn(data).payload {
            RequestHeadDeadline.of(context)?.disarm()
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}
