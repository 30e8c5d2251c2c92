import HummingbirdCore
import Logging
import NIOCore

/// The plaintext listener's connections: HTTP/2 with prior knowledge (h2c, what StreamClient and
/// h2load speak) and HTTP/1.1 (curl, browsers, simple tools) on the same port. Hummingbird's own
/// `plaintextHTTP2()` speaks only h2c, so this chooses per connection by the first bytes.
public struct PlaintextHTTPChannel: ServerChildChannel {
    public typealias Value = NegotiatedHTTPConnection

    private let http1: HTTP1Channel
    private let http2: HTTP2ConnectionChannel

    public init(http1: HTTP1Channel, http2: HTTP2ConnectionChannel) {
        self.http1 = http1
        self.http2 = http2
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let sniffer = PriorKnowledgeSniffer<NegotiatedHTTPConnection.Choice>(eventLoop: channel.eventLoop) { choice, channel in
                switch choice {
                case .http1: return http1.setup(channel: channel, logger: logger).map { .http1($0) }
                case .http2: return http2.setup(channel: channel, logger: logger).map { .http2($0) }
                }
            }
            try channel.pipeline.syncOperations.addHandler(sniffer)
            return Value(negotiated: sniffer.result, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await value.handle(http1: http1, http2: http2, logger: logger)
    }
}
