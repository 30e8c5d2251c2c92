import NIOCore
import NIOHTTP1
import NIOPosix

/// One keep-alive HTTP/1.1 connection for sequential requests: just enough client for `streamvm push`
/// (HEAD and PUT with small text answers), built on swift-nio so it needs no extra dependency.
final class HTTP1Connection {
    struct Reply {
        var status: Int
        var headers: HTTPHeaders
        var bytes: [UInt8]
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    /// Answers longer than this are cut off; the server only sends short text to a pusher.
    static let maximumReplyBytes = 64 << 10

    private var inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    private let hostHeader: String

    private init(inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator,
                 outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>, hostHeader: String) {
        self.inbound = inbound
        self.outbound = outbound
        self.hostHeader = hostHeader
    }

    /// Connects, runs `body` with the connection, and closes it whatever happens.
    static func with<T: Sendable>(host: String, port: Int, timeout: TimeAmount = .seconds(30),
                                  _ body: (HTTP1Connection) async throws -> T) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(timeout)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            let connection = HTTP1Connection(inbound: inbound.makeAsyncIterator(), outbound: outbound, hostHeader: "\(host):\(port)")
            return try await body(connection)
        }
    }

    func send(_ method: HTTPMethod, path: String, headers extra: [(String, String)] = [], body: ByteBuffer? = nil,
              replyLimit: Int = HTTP1Connection.maximumReplyBytes) async throws -> Reply {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: hostHeader)
        head.headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        for (name, value) in extra { head.headers.add(name: name, value: value) }
        try await outbound.write(.head(head))
        if let body, body.readableBytes > 0 { try await outbound.write(.body(.byteBuffer(body))) }
        try await outbound.write(.end(nil))

        guard case .head(let responseHead)? = try await inbound.next() else {
            throw ServerError.connectionFailed(url: path, problem: "the server closed the connection without answering")
        }
        var text = ByteBuffer()
        while let part = try await inbound.next() {
            switch part {
            case .head: throw ServerError.connectionFailed(url: path, problem: "the server sent two answers to one request")
            case .body(var chunk):
                if text.readableBytes + chunk.readableBytes <= replyLimit { text.writeBuffer(&chunk) }
            case .end:
                return Reply(status: Int(responseHead.status.code), headers: responseHead.headers, bytes: Array(text.readableBytesView))
            }
        }
        throw ServerError.connectionFailed(url: path, problem: "the server closed the connection mid-answer")
    }
}
