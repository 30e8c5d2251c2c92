import CCurl
import Catalog
import Foundation

/// Sends a finished run's trace to `POST /v1/traces/<appliance>` on an origin, with the upload token
/// as a bearer credential. One blocking libcurl easy transfer over HTTP/1.1 (a trace is one small
/// body, sent once after the run), on the calling thread: call it off the Swift concurrency pool.
public struct TraceUploader: Sendable {
    /// A trace upload that takes longer than this is abandoned (the run is over; nothing waits on it).
    public static let timeoutSeconds = 30

    public let origin: Origin
    /// The bearer token, as read from the token file (never put on a command line).
    private let token: String
    public var caFile: String?

    public init(origin: Origin, tokenFile: String) throws {
        guard let data = FileManager.default.contents(atPath: tokenFile),
              let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
              !text.isEmpty, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw ClientError.io(path: tokenFile, errno: EINVAL)
        }
        self.origin = origin
        self.token = text
    }

    /// Uploads `trace`; returns the server's one-line answer, throws on any status but 201.
    @discardableResult
    public func upload(_ trace: RunTrace) throws -> String {
        CurlGlobal.initialize()
        let body = try trace.encoded()
        let url = "\(origin.baseURL)/v1/traces/\(trace.appliance)"
        guard let handle = curl_easy_init() else { throw ClientError.curl("curl_easy_init failed") }
        defer { curl_easy_cleanup(handle) }
        var headers: UnsafeMutablePointer<curl_slist>?
        headers = curl_slist_append(headers, "Authorization: Bearer \(token)")
        headers = curl_slist_append(headers, "Content-Type: application/json")
        defer { curl_slist_free_all(headers) }
        let response = ResponseBuffer()
        let context = Unmanaged.passRetained(response)
        defer { context.release() }
        ccurl_easy_setopt_string(handle, CURLOPT_URL, url)
        ccurl_easy_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        ccurl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        ccurl_easy_setopt_long(handle, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1)
        ccurl_easy_setopt_long(handle, CURLOPT_TIMEOUT, Self.timeoutSeconds)
        ccurl_easy_setopt_string(handle, CURLOPT_USERAGENT, "streamvm-client/1")
        ccurl_easy_setopt_pointer(handle, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
        ccurl_easy_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
        if let caFile { ccurl_easy_setopt_string(handle, CURLOPT_CAINFO, caFile) }
        ccurl_easy_setopt_write_function(handle, responseWriteCallback)
        ccurl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, context.toOpaque())
        let code = body.withUnsafeBytes { bytes -> CURLcode in
            // COPYPOSTFIELDS copies the body, so the buffer need not outlive this call.
            ccurl_easy_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
            return curl_easy_perform(handle)
        }
        guard code == CURLE_OK else {
            throw ClientError.curl("trace upload to \(url): \(String(cString: curl_easy_strerror(code)))")
        }
        var status = 0
        ccurl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        let answer = String(decoding: response.data.prefix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 201 else { throw ClientError.traceRefused(url: url, status: status, message: answer) }
        return answer
    }
}

/// The server's answer, bounded (a hostile server cannot make the client buffer much).
private final class ResponseBuffer {
    static let limit = 64 << 10
    var data = Data()
}

private let responseWriteCallback: curl_write_callback = { pointer, size, count, context in
    guard let pointer, let context else { return 0 }
    let buffer = Unmanaged<ResponseBuffer>.fromOpaque(context).takeUnretainedValue()
    let bytes = size * count
    if buffer.data.count < ResponseBuffer.limit {
        buffer.data.append(UnsafeRawPointer(pointer).assumingMemoryBound(to: UInt8.self), count: min(bytes, ResponseBuffer.limit - buffer.data.count))
    }
    return bytes
}
