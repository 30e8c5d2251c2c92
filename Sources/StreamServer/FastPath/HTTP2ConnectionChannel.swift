import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP2
import Synchronization

/// One HTTP/2 connection of `streamvm serve` (h2c or h2 after ALPN). The pipeline is
///
///     NIOHTTP2Handler → HTTP2FirstRequestWatch → HTTP2GracefulClose → ObjectFastPathHandler → HTTP2StreamMultiplexer
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
        /// Those of them no task has taken yet.
        let waiting: WaitingStreams
        public let channel: any Channel
    }

    private let streamHandler: HTTP1Channel
    private let tuning: HTTP2Tuning
    private let store: VerifiedObjectStore
    private let metrics: ServerMetrics
    private let guards: ConnectionGuards

    init(responder: @escaping HTTPChannelHandler.Responder, configuration: HTTP1Channel.Configuration, tuning: HTTP2Tuning,
         store: VerifiedObjectStore, metrics: ServerMetrics, guards: ConnectionGuards) {
        self.streamHandler = HTTP1Channel(responder: responder, configuration: configuration)
        self.tuning = tuning
        self.store = store
        self.metrics = metrics
        self.guards = guards
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let (routed, continuation) = AsyncStream.makeStream(of: HTTP1Channel.Value.self)
            let waiting = WaitingStreams()
            var connection = NIOHTTP2Handler.ConnectionConfiguration()
            connection.initialSettings = tuning.settings
            try channel.syncOptions?.setOption(ChannelOptions.writeBufferWaterMark,
                                               value: .init(low: tuning.writeBufferBytes / 2, high: tuning.writeBufferBytes))
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection))
            try pipeline.addHandler(HTTP2FirstRequestWatch())
            try pipeline.addHandler(HTTP2GracefulClose())
            try pipeline.addHandler(ObjectFastPathHandler(store: store, metrics: metrics, logger: logger))
            let multiplexer = HTTP2StreamMultiplexer(mode: .server, channel: channel, targetWindowSize: tuning.initialWindowSize,
                                                     inboundStreamInitializer: { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTPServerCodec())
                    try stream.pipeline.syncOperations.addHandler(guards.requestLimits(.http2Stream))
                    let value = try HTTP1Channel.Value(wrappingChannelSynchronously: stream)
                    waiting.insert(value)
                    // After the connection closed (or its task ended) nobody will take it.
                    if case .terminated = continuation.yield(value) { waiting.abandon(value) }
                }
            })
            try pipeline.addHandler(multiplexer)
            channel.closeFuture.whenComplete { _ in continuation.finish() }
            return Value(routedStreams: routed, waiting: waiting, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await withDiscardingTaskGroup { group in
            for await stream in value.routedStreams {
                value.waiting.remove(stream)
                group.addTask { await streamHandler.handle(value: stream, logger: logger) }
            }
        }
        // Cancelled (the shutdown grace ran out) with streams still queued: AsyncStream drops them.
        await value.waiting.abandonAll()
    }
}

/// The routed streams of one connection that were created but not yet handed to a task. A stream's
/// `NIOAsyncChannel` that is dropped without its writer being finished traps in swift-nio
/// ("Deinited NIOAsyncWriter without calling finish()") — which is what happened when a client
/// vanished with streams in flight, or the shutdown grace cancelled a connection whose task had not
/// taken every stream yet (the abort noted in StreamResumeTests). Streams nobody will serve are
/// finished and closed here instead.
final class WaitingStreams: Sendable {
    private let streams = Mutex<[ObjectIdentifier: HTTP1Channel.Value]>([:])

    func insert(_ stream: HTTP1Channel.Value) {
        streams.withLock { $0[ObjectIdentifier(stream.channel)] = stream }
    }

    func remove(_ stream: HTTP1Channel.Value) {
        _ = streams.withLock { $0.removeValue(forKey: ObjectIdentifier(stream.channel)) }
    }

    /// For the event loop, which cannot wait: the stream is finished by a task of its own.
    func abandon(_ stream: HTTP1Channel.Value) {
        remove(stream)
        Task { await Self.finish(stream) }
    }

    func abandonAll() async {
        let left = streams.withLock { streams in
            defer { streams = [:] }
            return Array(streams.values)
        }
        for stream in left { await Self.finish(stream) }
    }

    /// Finishes the stream's writer and closes it, without reading or writing anything.
    private static func finish(_ stream: HTTP1Channel.Value) async {
        try? await stream.executeThenClose { _, _ in }
    }
}
