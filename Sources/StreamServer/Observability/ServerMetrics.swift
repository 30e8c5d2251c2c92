import NIOConcurrencyHelpers
import Prometheus

/// The server's Prometheus metrics. Metric objects are created once and looked up by small keys, so
/// recording costs an atomic add or a short lock, never string formatting on the hot path.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let requestCounters = NIOLockedValueBox<[RequestKey: Counter]>([:])
    private let errorCounters = NIOLockedValueBox<[String: Counter]>([:])
    private let bytesSent: Counter
    private let bytesReceived: Counter
    private let latency: DurationHistogram
    private let verifications: [Bool: Counter]
    private let scrubbed: Counter
    private let cacheBytes: Gauge
    private let eventLoopAnswers: Counter
    private let connectionsOpen: Gauge
    private let connectionsAccepted: Counter
    private let connectionCounters = NIOLockedValueBox<[String: Counter]>([:])

    private struct RequestKey: Hashable {
        var method: String
        var status: Int
    }

    /// Latency buckets from 100 µs (a cached chunk on loopback) to 10 s (a large object on a slow link).
    static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(10),
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        bytesSent = registry.makeCounter(name: "streamvm_http_response_body_bytes_total", help: "Response body bytes handed to the transport.")
        bytesReceived = registry.makeCounter(name: "streamvm_http_upload_bytes_total", help: "Upload body bytes accepted and stored.")
        latency = registry.makeDurationHistogram(name: "streamvm_http_request_duration_seconds", buckets: Self.latencyBuckets,
                                                 help: "Time from request head to response head and body handed to the transport.")
        verifications = [
            true: registry.makeCounter(name: "streamvm_object_verifications_total", labels: [("result", "good")], help: "Objects read and verified against their names."),
            false: registry.makeCounter(name: "streamvm_object_verifications_total", labels: [("result", "corrupt")], help: "Objects read and verified against their names."),
        ]
        scrubbed = registry.makeCounter(name: "streamvm_scrub_objects_total", help: "Objects re-verified by the background scrubber.")
        eventLoopAnswers = registry.makeCounter(name: "streamvm_http_event_loop_answers_total",
                                                help: "HTTP/2 reads of cached verified objects answered on the event loop (also counted in streamvm_http_requests_total).")
        cacheBytes = registry.makeGauge(name: "streamvm_object_cache_bytes", help: "Bytes of verified objects held in memory.")
        connectionsOpen = registry.makeGauge(name: "streamvm_connections_open", help: "Client connections open now (admitted, not yet closed).")
        connectionsAccepted = registry.makeCounter(name: "streamvm_connections_accepted_total", help: "Client connections admitted.")
    }

    /// Counts one finished request.
    public func recordRequest(method: String, status: Int, bodyBytes: Int, duration: Duration) {
        let counter = requestCounters.withLockedValue { counters -> Counter in
            let key = RequestKey(method: method, status: status)
            if let counter = counters[key] { return counter }
            let counter = registry.makeCounter(name: "streamvm_http_requests_total",
                                               labels: [("method", method), ("status", String(status))],
                                               help: "HTTP requests answered, by method and status.")
            counters[key] = counter
            return counter
        }
        counter.increment()
        if bodyBytes > 0 { bytesSent.increment(by: Int64(bodyBytes)) }
        latency.record(duration)
        if status >= 500 { recordError("server") } else if status >= 400 { recordError("client") }
    }

    /// Counts an error by kind (`client`, `server`, `corrupt_object`, `upload_rejected`, ...).
    public func recordError(_ kind: String) {
        errorCounters.withLockedValue { counters -> Counter in
            if let counter = counters[kind] { return counter }
            let counter = registry.makeCounter(name: "streamvm_http_errors_total", labels: [("kind", kind)],
                                               help: "Errors answered or detected, by kind.")
            counters[kind] = counter
            return counter
        }.increment()
    }

    func recordConnectionOpened() {
        connectionsAccepted.increment()
        connectionsOpen.increment()
    }

    func recordConnectionClosed() { connectionsOpen.decrement() }

    /// A connection closed at accept because a cap was reached (`total_limit`, `address_limit`).
    func recordConnectionRefused(_ reason: String) {
        connectionCounter("streamvm_connections_refused_total", reason,
                          help: "Connections closed at accept because a connection cap was reached, by cap.").increment()
    }

    /// A connection (or HTTP/2 stream) the server closed because a limit was reached (`head_timeout`,
    /// `body_timeout`, `stall`).
    func recordConnectionClosedByServer(_ reason: String) {
        connectionCounter("streamvm_connections_closed_by_limit_total", reason,
                          help: "Connections (HTTP/2: streams, for body_timeout) the server closed at a time limit, by limit.").increment()
    }

    private func connectionCounter(_ name: String, _ reason: String, help: String) -> Counter {
        connectionCounters.withLockedValue { counters in
            let key = name + "/" + reason
            if let counter = counters[key] { return counter }
            let counter = registry.makeCounter(name: name, labels: [("reason", reason)], help: help)
            counters[key] = counter
            return counter
        }
    }

    func recordVerification(good: Bool) { verifications[good]!.increment() }
    func recordEventLoopAnswer() { eventLoopAnswers.increment() }
    func recordScrubbed() { scrubbed.increment() }
    func recordUpload(bytes: Int) { bytesReceived.increment(by: Int64(bytes)) }
    func recordCacheBytes(_ bytes: Int) { cacheBytes.set(Double(bytes)) }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] {
        var buffer = [UInt8]()
        registry.emit(into: &buffer)
        return buffer
    }
}
