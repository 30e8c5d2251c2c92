import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP2

/// One HTTP/2 connection of `streamvm serve` (h2c or h2 after ALPN). The pipeline is
///
///     NIOHTTP2Handler → HTTP2GracefulClose → ObjectFastPathHandler → HTTP2StreamMultiplexer
///
/// Reads of cached verified objects are answered by `ObjectFastPathHandler` on the event loop.
/// Every other stream becomes a child channel of the multiplexer and is answered by Hummingbird's
/// responder (`HTTP1Channel.handle`: one request per stream) in a task of this connection, as
/// Hummingbird's own `HTTP2Channel` does — which cannot be used here because its multiplexer is
/// inside `NIOHTTP2Handler`, where no handler can see a stream's frames first.
public struct HTTP2ConnectionChannel: ServerChildChannel {
    public struct Value: ServerChildChannelValue {
        /// Streams for the responder, in the order the client opened them; ends when the connection closes.
        let routedStreams: AsyncStream<HTTP1Channel.Value>
        public let channel: any Channel
    }

    private let streamHandler: HTTP1Channel
    private let tuning: HTTP2Tuning
    private let store: VerifiedObjectStore
    private let metrics: ServerMetrics

    public init(responder: @escaping HTTPChannelHandler.Responder, configuration: HTTP1Channel.Configuration, tuning: HTTP2Tuning,
                store: VerifiedObjectStore, metrics: ServerMetrics) {
        self.streamHandler = HTTP1Channel(responder: responder, configuration: configuration)
        self.tuning = tuning
        self.store = store
        self.metrics = metrics
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let (routed, continuation) = AsyncStream.makeStream(of: HTTP1Channel.Value.self)
            var connection = NIOHTTP2Handler.ConnectionConfiguration()
            connection.initialSettings = tuning.settings
            try channel.syncOptions?.setOption(ChannelOptions.writeBufferWaterMark,
                                               value: .init(low: tuning.writeBufferBytes / 2, high: tuning.writeBufferBytes))
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection))
            try pipeline.addHandler(HTTP2GracefulClose())
            try pipeline.addHandler(ObjectFastPathHandler(store: store, metrics: metrics, logger: logger))
            let multiplexer = HTTP2StreamMultiplexer(mode: .server, channel: channel, targetWindowSize: tuning.initialWindowSize,
                                                     inboundStreamInitializer: { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTPServerCodec())
                    continuation.yield(try HTTP1Channel.Value(wrappingChannelSynchronously: stream))
                }
            })
            try pipeline.addHandler(multiplexer)
            channel.closeFuture.whenComplete { _ in continuation.finish() }
            return Value(routedStreams: routed, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await withDiscardingTaskGroup { group in
            for await stream in value.routedStreams {
                group.addTask { await streamHandler.handle(value: stream, logger: logger) }
            }
        }
    }
}
