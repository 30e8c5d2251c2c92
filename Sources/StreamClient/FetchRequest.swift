import Foundation

/// Which HTTP version a request may use. Origins start with the fastest mode their scheme allows and
/// fall back to HTTP/1.1 when a server does not speak HTTP/2.
public enum HTTPMode: Sendable, Equatable {
    /// Cleartext HTTP/2 without an upgrade round trip (RFC 9113 §3.3, "prior knowledge").
    case h2cPriorKnowledge
    /// HTTP/2 negotiated by ALPN over TLS, HTTP/1.1 if the server offers nothing else.
    case h2OverTLS
    case http1
}

/// One GET of one URL. Bodies are bounded: a hostile server cannot make the client buffer more than
/// `maximumBytes`, and when the size is known in advance (`expectedBytes`) any other length fails.
public struct FetchRequest: Sendable {
    public var url: String
    public var priority: FetchPriority
    public var mode: HTTPMode
    public var maximumBytes: Int
    public var expectedBytes: Int?

    public init(url: String, priority: FetchPriority, mode: HTTPMode, maximumBytes: Int, expectedBytes: Int? = nil) {
        self.url = url
        self.priority = priority
        self.mode = mode
        self.maximumBytes = expectedBytes.map { min($0, maximumBytes) } ?? maximumBytes
        self.expectedBytes = expectedBytes
    }
}

/// A complete 200 response body, not yet verified: callers check it against a digest before use.
public struct FetchedBody: Sendable {
    public var data: Data
    /// 1 for HTTP/1.x, 2 for HTTP/2 (what libcurl actually used).
    public var httpVersion: Int
    /// Seconds from sending the request to its first response byte.
    public var firstByteSeconds: Double
    public var totalSeconds: Double
}

/// Why one request failed. Callers retry, fail over or give up depending on the case.
public enum FetchError: Error, Sendable, Equatable, CustomStringConvertible {
    case httpStatus(Int)
    /// libcurl's transport failure: connection refused or reset, HTTP/2 stream error, TLS, short body.
    case transport(code: Int, message: String)
    case tooLarge(limit: Int)
    case wrongLength(expected: Int, received: Int)
    /// No byte arrived for the stall timeout.
    case stalled(seconds: Double)
    case cancelled
    case shutDown

    public var description: String {
        switch self {
        case .httpStatus(let code): return "HTTP status \(code)"
        case .transport(let code, let message): return "transport error \(code): \(message)"
        case .tooLarge(let limit): return "response exceeds \(limit) bytes"
        case .wrongLength(let expected, let received): return "response has \(received) bytes, expected \(expected)"
        case .stalled(let seconds): return "no data for \(String(format: "%.1f", seconds)) s"
        case .cancelled: return "cancelled"
        case .shutDown: return "fetcher shut down"
        }
    }

    /// Errors that suggest the server does not speak HTTP/2 at all (rather than a broken transfer).
    var suggestsNoHTTP2: Bool {
        guard case .transport(let code, _) = self else { return false }
        // CURLE_UNSUPPORTED_PROTOCOL 1, CURLE_WEIRD_SERVER_REPLY 8, CURLE_HTTP2 16, CURLE_PARTIAL_FILE 18
        // (an HTTP/1.1 server closing on the h2 preface), CURLE_GOT_NOTHING 52, CURLE_RECV_ERROR 56,
        // CURLE_HTTP2_STREAM 92 (libcurl-errors(3)).
        return [1, 8, 16, 18, 52, 56, 92].contains(code)
    }
}
