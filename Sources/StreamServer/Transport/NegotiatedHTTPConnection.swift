import HummingbirdCore
import Logging
import NIOCore

/// A connection whose protocol is chosen after it was accepted (by its first bytes on plaintext, by
/// ALPN over TLS), and how it is then served.
public struct NegotiatedHTTPConnection: ServerChildChannelValue {
    public enum Choice: Sendable {
        case http1(HTTP1Channel.Value)
        case http2(HTTP2ConnectionChannel.Value)
    }

    let negotiated: EventLoopFuture<Choice>
    public let channel: any Channel

    func handle(http1: HTTP1Channel, http2: HTTP2ConnectionChannel, logger: Logger) async {
        do {
            switch try await negotiated.get() {
            case .http1(let connection): await http1.handle(value: connection, logger: logger)
            case .http2(let connection): await http2.handle(value: connection, logger: logger)
            }
        } catch {
            logger.debug("connection closed before it chose a protocol", metadata: ["error": "\(error)"])
        }
    }
}
