import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// The TLS listener's connections: h2 or HTTP/1.1 as ALPN decides (RFC 7301), HTTP/1.1 when the
/// client offers neither. Hummingbird's `HTTP2UpgradeChannel` does the same for its own HTTP/2
/// pipeline; this one hands h2 to `HTTP2ConnectionChannel`.
public struct TLSHTTPChannel: ServerChildChannel {
    public typealias Value = NegotiatedHTTPConnection

    /// ALPN identifiers (IANA registry), most preferred first.
    static let applicationProtocols = ["h2", "http/1.1"]

    private let context: NIOSSLContext
    private let http1: HTTP1Channel
    private let http2: HTTP2ConnectionChannel

    public init(tls: TLSConfiguration, http1: HTTP1Channel, http2: HTTP2ConnectionChannel) throws {
        var tls = tls
        tls.applicationProtocols = Self.applicationProtocols
        self.context = try NIOSSLContext(configuration: tls)
        self.http1 = http1
        self.http2 = http2
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(NIOSSLServerHandler(context: context))
            let negotiation = NIOTypedApplicationProtocolNegotiationHandler<NegotiatedHTTPConnection.Choice> { result, channel in
                switch result {
                case .negotiated("h2"): return http2.setup(channel: channel, logger: logger).map { .http2($0) }
                default: return http1.setup(channel: channel, logger: logger).map { .http1($0) }
                }
            }
            try pipeline.addHandler(negotiation)
            return Value(negotiated: negotiation.protocolNegotiationResult, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await value.handle(http1: http1, http2: http2, logger: logger)
    }
}
