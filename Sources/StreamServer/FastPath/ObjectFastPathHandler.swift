import Catalog
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Answers HTTP/2 GET and HEAD requests for content-addressed objects (chunks, manifests,
/// dictionaries, models) whose verified copy is in memory, on the connection's event loop: no
/// stream channel, no task, no hop to the concurrency pool. The earlier profile of `streamvm serve`
/// put ~70 % of its CPU in per-stream child channels and ~24 % in hops between event loops and the
/// pool (issue #16); a cached chunk needs neither.
///
/// Everything it does not answer — catalog.json, objects not yet verified or not cached, requests
/// with a body, malformed or unknown targets, other methods — goes on unchanged to the stream
/// multiplexer behind it and so to Hummingbird's responder, which keeps every rule and error text.
/// The answer follows the same rules (`ObjectAnswer`) and carries the same headers as that path.
///
/// It also stops reading from a connection whose writes are not draining, so that a client that
/// sends requests and never reads the answers cannot make the server buffer without bound.
final class ObjectFastPathHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let store: VerifiedObjectStore
    private let metrics: ServerMetrics
    private let logger: Logger
    /// Streams answered here that HTTP/2 has not closed yet: their remaining frames (a client's
    /// RST_STREAM or WINDOW_UPDATE) are this handler's, the multiplexer has never heard of them.
    private var answeredStreams = Set<HTTP2StreamID>()
    private var flushNeeded = false
    /// A `read` held back while the channel was not writable.
    private var readHeld = false
    private var dates = HTTPDateCache()

    init(store: VerifiedObjectStore, metrics: ServerMetrics, logger: Logger) {
        self.store = store
        self.metrics = metrics
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if case .headers(let headers) = frame.payload, headers.endStream, answer(frame.streamID, headers.headers, context: context) {
            return
        }
        if !answeredStreams.isEmpty, answeredStreams.contains(frame.streamID) { return }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // One flush for every answer of this read, however many requests it carried.
        if flushNeeded {
            flushNeeded = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent, answeredStreams.remove(closed.streamID) != nil { return }
        context.fireUserInboundEventTriggered(event)
    }

    func read(context: ChannelHandlerContext) {
        guard context.channel.isWritable else {
            readHeld = true
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, readHeld {
            readHeld = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    /// Writes the answer and returns true when the request is one this handler serves.
    private func answer(_ stream: HTTP2StreamID, _ request: HPACKHeaders, context: ChannelHandlerContext) -> Bool {
        let start = ContinuousClock.now
        var method: String?, path: String?, range: String?, ifNoneMatch: String?, ifRange: String?
        for (name, value, _) in request {
            switch name {
            case ":method": method = value
            case ":path": path = value
            case "range": range = value
            case "if-none-match": ifNoneMatch = value
            case "if-range": ifRange = value
            default: continue
            }
        }
        let isHead: Bool
        switch method {
        case "GET"?: isHead = false
        case "HEAD"?: isHead = true
        default: return false
        }
        // Looked up by the exact target sent: only the canonical spelling of a verified, cached
        // object matches, so there is nothing to parse; anything else is the router's to judge.
        guard let path, let copy = store.verifiedCopy(forTarget: path) else { return false }

        let size = copy.bytes.readableBytes
        var headers: HPACKHeaders
        var body: ByteBuffer?
        let status: Int
        if range == nil, ifNoneMatch == nil {
            status = 200
            headers = copy.wholeAnswerHeaders
            body = isHead ? nil : copy.bytes
        } else {
            let decided = ObjectAnswer.decide(size: size, entityTag: copy.entityTag, ifNoneMatch: ifNoneMatch, range: range, ifRange: ifRange)
            status = decided.statusCode
            headers = HPACKHeaders([(":status", String(status))])
            VerifiedCopy.addRepresentation(copy.representationFields, to: &headers)
            if let contentRange = decided.contentRange { headers.add(name: "content-range", value: contentRange, indexing: .nonIndexable) }
            if let slice = decided.slice {
                headers.add(name: "content-length", value: String(slice.length), indexing: .nonIndexable)
                if !isHead { body = copy.bytes.getSlice(at: copy.bytes.readerIndex + slice.offset, length: slice.length) }
            }
        }
        headers.add(name: "date", value: dates.current())

        answeredStreams.insert(stream)
        let hasBody = body.map { $0.readableBytes > 0 } ?? false
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: headers, endStream: !hasBody)))), promise: nil)
        if hasBody, let body {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .data(.init(data: .byteBuffer(body), endStream: true)))), promise: nil)
        }
        flushNeeded = true

        let bodyBytes = body?.readableBytes ?? 0
        metrics.recordRequest(method: isHead ? "HEAD" : "GET", status: status, bodyBytes: bodyBytes, duration: ContinuousClock.now - start)
        metrics.recordEventLoopAnswer()
        if logger.logLevel <= .debug {
            logger.debug("request", metadata: [
                "method": "\(isHead ? "HEAD" : "GET")", "target": "\(path.prefix(120))", "status": "\(status)",
                "bytes": "\(bodyBytes)", "path": "event-loop",
            ])
        }
        return true
    }
}
