import CCurl
import Foundation

/// One POST of a small body with libcurl's easy interface, blocking the calling thread (call it off
/// the Swift concurrency pool): trace uploads, and a migration's offer and completion notice.
/// The answer is bounded, so a hostile server cannot make the client buffer much of it.
public struct HTTPPost: Sendable {
    /// The status and (at most `answerLimit` bytes of) the body the server answered with.
    public struct Answer: Sendable {
        public var status: Int
        public var body: Data

        /// The body's first line or so, for an error message.
        public var summary: String { String(decoding: body.prefix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// Bytes of an answer kept; the rest is read and dropped.
    public static let answerLimit = 64 << 10

    public var url: String
    public var body: Data
    public var contentType = "application/json"
    /// Sent as `Authorization: Bearer …` when set.
    public var bearerToken: String?
    /// `.h2cPriorKnowledge` for a server that speaks only cleartext HTTP/2.
    public var mode: HTTPMode = .http1
    public var timeoutSeconds: Int
    public var caFile: String?

    public init(url: String, body: Data, bearerToken: String? = nil, mode: HTTPMode = .http1, timeoutSeconds: Int, caFile: String? = nil) {
        self.url = url
        self.body = body
        self.bearerToken = bearerToken
        self.mode = mode
        self.timeoutSeconds = timeoutSeconds
        self.caFile = caFile
    }

    /// Sends the body; throws `ClientError.curl` when no answer came (connection, timeout), and
    /// returns whatever status the server answered with.
    public func perform() throws -> Answer {
        CurlGlobal.initialize()
        guard let handle = curl_easy_init() else { throw ClientError.curl("curl_easy_init failed") }
        defer { curl_easy_cleanup(handle) }
        var headers: UnsafeMutablePointer<curl_slist>?
        if let bearerToken { headers = curl_slist_append(headers, "Authorization: Bearer \(bearerToken)") }
        headers = curl_slist_append(headers, "Content-Type: \(contentType)")
        defer { curl_slist_free_all(headers) }
        let response = AnswerBuffer()
        let context = Unmanaged.passRetained(response)
        defer { context.release() }
        let version: Int
        switch mode {
        case .h2cPriorKnowledge: version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
        case .h2OverTLS: version = CURL_HTTP_VERSION_2TLS
        case .http1: version = CURL_HTTP_VERSION_1_1
        }
        ccurl_easy_setopt_string(handle, CURLOPT_URL, url)
        ccurl_easy_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        ccurl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        ccurl_easy_setopt_long(handle, CURLOPT_HTTP_VERSION, version)
        ccurl_easy_setopt_long(handle, CURLOPT_TIMEOUT, timeoutSeconds)
        ccurl_easy_setopt_string(handle, CURLOPT_USERAGENT, "streamvm-client/1")
        ccurl_easy_setopt_pointer(handle, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
        ccurl_easy_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
        if let caFile { ccurl_easy_setopt_string(handle, CURLOPT_CAINFO, caFile) }
        ccurl_easy_setopt_write_function(handle, answerWriteCallback)
        ccurl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, context.toOpaque())
        let code = body.withUnsafeBytes { bytes -> CURLcode in
            // COPYPOSTFIELDS copies the body, so the buffer need not outlive this call; an empty
            // body still needs a valid pointer.
            var empty: UInt8 = 0
            ccurl_easy_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress ?? UnsafeRawPointer(&empty)))
            return curl_easy_perform(handle)
        }
        guard code == CURLE_OK else {
            throw ClientError.curl("POST \(url): \(String(cString: curl_easy_strerror(code)))")
        }
        var status = 0
        ccurl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return Answer(status: status, body: response.data)
    }
}

private final class AnswerBuffer {
    var data = Data()
}

private let answerWriteCallback: curl_write_callback = { pointer, size, count, context in
    guard let pointer, let context else { return 0 }
    let buffer = Unmanaged<AnswerBuffer>.fromOpaque(context).takeUnretainedValue()
    let bytes = size * count
    if buffer.data.count < HTTPPost.answerLimit {
        buffer.data.append(UnsafeRawPointer(pointer).assumingMemoryBound(to: UInt8.self), count: min(bytes, HTTPPost.answerLimit - buffer.data.count))
    }
    return bytes
}
