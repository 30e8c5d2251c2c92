import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOCore

/// The plaintext listener's connections: HTTP/2 with prior knowledge (h2c, what StreamClient and
/// h2load speak) and HTTP/1.1 (curl, browsers, simple tools) on the same port. Hummingbird's own
/// `plaintextHTTP2()` speaks only h2c, so this chooses per connection by the first bytes.
public struct PlaintextHTTPChannel: ServerChildChannel {
    public enum Negotiated: Sendable {
        case http1(HTTP1Channel.Value)
        case http2(HTTP2Channel.Value)
    }

    public struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        public let channel: any Channel
    }

    private let http1: HTTP1Channel
    private let http2: HTTP2Channel

    public init(responder: @escaping HTTPChannelHandler.Responder, configuration: HTTP2ChannelConfiguration) {
        http1 = HTTP1Channel(responder: responder, configuration: configuration.streamConfiguration)
        http2 = HTTP2Channel(responder: responder, configuration: configuration)
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let sniffer = PriorKnowledgeSniffer<Negotiated>(eventLoop: channel.eventLoop) { choice, channel in
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
        do {
            switch try await value.negotiated.get() {
            case .http1(let connection): await http1.handle(value: connection, logger: logger)
            case .http2(let connection): await http2.handle(value: connection, logger: logger)
            }
        } catch {
            logger.debug("connection closed before it chose a protocol", metadata: ["error": "\(error)"])
        }
    }
}
