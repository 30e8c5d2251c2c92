import CCurl
import Foundation

/// One libcurl easy handle and the body it is collecting. Lives on the fetcher's thread only.
final class CurlTransfer {
    let id: RequestID
    let request: FetchRequest
    let handle: UnsafeMutableRawPointer
    let completion: @Sendable (Result<FetchedBody, FetchError>) -> Void
    private(set) var body = Data()
    /// Set when the write callback refused data; the transfer then ends with CURLE_WRITE_ERROR.
    private(set) var refusal: FetchError?
    var lastProgress: Double
    /// Whether libcurl has sent the request; until then the transfer waits for a connection (or, on
    /// HTTP/1.1, for a free one) and must not count as stalled.
    var requestSent = false
    /// Whether at most one BDP was in flight when the request started (its first-byte time is then an RTT sample).
    var startedUncongested = true
    /// Whether the response body is arriving (first byte received, transfer not finished).
    var isReceiving: Bool { !body.isEmpty }
    /// Called with each accepted body slice's size (the fetcher's bandwidth estimator).
    /// The flag says whether the slice is the body's first.
    var onBytes: ((Int, Bool) -> Void)?

    /// HTTP/2 stream weights (RFC 7540 §5.3.2, 1...256): servers that honour them send demand bytes first.
    static let demandWeight = 256
    static let prefetchWeight = 8

    init?(id: RequestID, request: FetchRequest, now: Double, configuration: Fetcher.Configuration,
          completion: @escaping @Sendable (Result<FetchedBody, FetchError>) -> Void) {
        guard let handle = curl_easy_init() else { return nil }
        self.id = id
        self.request = request
        self.handle = handle
        self.completion = completion
        self.lastProgress = now
        if let expected = request.expectedBytes { body.reserveCapacity(expected) }
        ccurl_easy_setopt_string(handle, CURLOPT_URL, request.url)
        ccurl_easy_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        ccurl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        ccurl_easy_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        ccurl_easy_setopt_long(handle, CURLOPT_PIPEWAIT, 1)
        ccurl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Int(configuration.connectTimeoutSeconds * 1000))
        ccurl_easy_setopt_string(handle, CURLOPT_USERAGENT, "streamvm-client/1")
        let version: Int
        switch request.mode {
        case .h2cPriorKnowledge: version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
        case .h2OverTLS: version = CURL_HTTP_VERSION_2TLS
        case .http1: version = CURL_HTTP_VERSION_1_1
        }
        ccurl_easy_setopt_long(handle, CURLOPT_HTTP_VERSION, version)
        if request.mode == .h2cPriorKnowledge && Self.priorKnowledgeReuseIsBroken {
            // libcurl before 8.0 breaks a reused prior-knowledge connection ("Error in the HTTP2
            // framing layer", curl issue 10634, fixed in 8.0). Debian 12 ships 7.88.1, so there each
            // h2c request gets its own connection: correct, at the cost of a handshake per request.
            ccurl_easy_setopt_long(handle, CURLOPT_PIPEWAIT, 0)
            ccurl_easy_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1)
            ccurl_easy_setopt_long(handle, CURLOPT_FORBID_REUSE, 1)
        }
        ccurl_easy_setopt_long(handle, CURLOPT_STREAM_WEIGHT, request.priority.isDemand ? Self.demandWeight : Self.prefetchWeight)
        if let caFile = configuration.caFile { ccurl_easy_setopt_string(handle, CURLOPT_CAINFO, caFile) }
        ccurl_easy_setopt_write_function(handle, curlWriteCallback)
    }

    /// Registers `self` as the write callback's context; the fetcher keeps the transfer alive until done.
    func attachContext() {
        ccurl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit { curl_easy_cleanup(handle) }

    /// Whether the linked libcurl has the prior-knowledge reuse bug (all versions before 8.0.0).
    static let priorKnowledgeReuseIsBroken: Bool = {
        guard let info = curl_version_info(CCURL_VERSION_NOW) else { return true }
        return info.pointee.version_num < 0x08_00_00
    }()

    /// Accepts a body slice; returning a different count than offered makes libcurl abort the transfer.
    fileprivate func receive(_ bytes: UnsafeRawBufferPointer) -> Int {
        if body.isEmpty {
            var status = 0
            ccurl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            if status != 200 {
                refusal = .httpStatus(status)
                return 0
            }
        }
        guard body.count + bytes.count <= request.maximumBytes else {
            refusal = request.expectedBytes.map { .wrongLength(expected: $0, received: body.count + bytes.count) }
                ?? .tooLarge(limit: request.maximumBytes)
            return 0
        }
        body.append(bytes.bindMemory(to: UInt8.self))
        onBytes?(bytes.count, body.count == bytes.count)
        return bytes.count
    }

    /// The outcome once libcurl reports the transfer done with `code`.
    func outcome(code: CURLcode) -> Result<FetchedBody, FetchError> {
        if let refusal { return .failure(refusal) }
        guard code == CURLE_OK else {
            let message = String(cString: curl_easy_strerror(code))
            return .failure(.transport(code: Int(code.rawValue), message: message))
        }
        var status = 0
        ccurl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        guard status == 200 else { return .failure(.httpStatus(status)) }
        if let expected = request.expectedBytes, body.count != expected {
            return .failure(.wrongLength(expected: expected, received: body.count))
        }
        var version = 0
        ccurl_easy_getinfo_long(handle, CURLINFO_HTTP_VERSION, &version)
        return .success(FetchedBody(data: body, httpVersion: version >= CURL_HTTP_VERSION_2_0 ? 2 : 1,
                                    firstByteSeconds: firstByteSeconds ?? 0, totalSeconds: timing(CURLINFO_TOTAL_TIME)))
    }

    /// Checks (once it is true, no more) whether the request has gone out.
    func checkRequestSent() -> Bool {
        if !requestSent { requestSent = timing(CURLINFO_PRETRANSFER_TIME) > 0 }
        return requestSent
    }

    /// Request sent to first byte, the fetcher's RTT sample: from pretransfer on a reused connection,
    /// from the start of connecting on a new one (its handshakes are part of what the request cost;
    /// with the h2c workaround every request pays them, and the prefetch window must cover that).
    var firstByteSeconds: Double? {
        var connects = 0
        ccurl_easy_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connects)
        let start = connects > 0 ? timing(CURLINFO_NAMELOOKUP_TIME) : timing(CURLINFO_PRETRANSFER_TIME)
        let first = timing(CURLINFO_STARTTRANSFER_TIME)
        guard first > 0, first >= start else { return nil }
        return first - start
    }

    private func timing(_ info: CURLINFO) -> Double {
        var value = 0.0
        ccurl_easy_getinfo_double(handle, info, &value)
        return value
    }
}

private let curlWriteCallback: curl_write_callback = { pointer, size, count, context in
    guard let context else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(context).takeUnretainedValue()
    return transfer.receive(UnsafeRawBufferPointer(start: pointer, count: size * count))
}
