import CCurl
import Foundation
import Logging

/// HTTP client on libcurl's multi interface, running on its own thread (libcurl handles are not
/// thread-safe, and blocking in `curl_multi_poll` must not occupy a Swift concurrency thread).
/// Requests to one origin share one HTTP/2 connection (`CURLPIPE_MULTIPLEX` + `CURLOPT_PIPEWAIT`);
/// the `FetchScheduler` decides what starts when; a `LinkEstimator` measures bandwidth and RTT.
public final class Fetcher: @unchecked Sendable {
    /// Whether the linked libcurl opens a connection per h2c request (libcurl < 8.0 cannot reuse a
    /// prior-knowledge connection); benchmarks report it beside their figures.
    public static var opensConnectionPerH2CRequest: Bool { CurlTransfer.priorKnowledgeReuseIsBroken }

    public struct Configuration: Sendable {
        public var connectTimeoutSeconds = 10.0
        /// A transfer that receives nothing for this long is aborted (and retried by callers).
        public var stallTimeoutSeconds = 15.0
        public var maximumInFlight = 96
        /// Of `maximumInFlight`, slots kept free of prefetch for demand misses.
        public var demandReserve = 8
        /// Prefetch window before the link is measured; small enough that on a slow link
        /// (20 Mbit/s, 60 ms: BDP 150 kB) a demand miss does not wait behind several BDPs of prefetch.
        public var unmeasuredPrefetchWindowBytes = 256 * 1024
        /// Prefetch window, in bandwidth-delay products, while no demand miss is pending or recent.
        public var openWindowInBDPs = 2.5
        /// Prefetch window while demand misses are happening (see `PrefetchWindowPolicy`).
        public var pressuredWindowInBDPs = 1.0
        /// Extra CA bundle for https origins (self-signed edge hosts).
        public var caFile: String?
        public init() {}
    }

    private enum Command {
        case submit(CurlTransferSpec)
        case cancel(RequestID)
        case reprioritize(RequestID, FetchPriority)
    }

    struct CurlTransferSpec {
        let id: RequestID
        let request: FetchRequest
        let completion: @Sendable (Result<FetchedBody, FetchError>) -> Void
    }

    /// Browsers' customary per-host limit for HTTP/1.1.
    static let http1ConnectionsPerHost = 6

    public let configuration: Configuration
    private let logger: Logger
    private let multi: UnsafeMutableRawPointer
    private let lock = NSLock()
    // Guarded by `lock`: the inbox from other threads, and the published estimate.
    private var inbox: [Command] = []
    private var stopping = false
    private var publishedEstimate = LinkEstimate(bytesReceived: 0)
    private var publishedCounts = (queued: 0, inFlight: 0)
    private var nextID: UInt64 = 1
    private let stopped = DispatchSemaphore(value: 0)

    // Owned by the transfer thread.
    private var scheduler = FetchScheduler()
    private var estimator = LinkEstimator()
    private var queued: [RequestID: CurlTransferSpec] = [:]
    private var active: [RequestID: CurlTransfer] = [:]
    private var activeByHandle: [UnsafeMutableRawPointer: RequestID] = [:]
    private var cancelledBeforeSubmit: Set<RequestID> = []
    private var lastStateLog = 0.0

    public init(configuration: Configuration = Configuration(), logger: Logger) throws {
        CurlGlobal.initialize()
        guard let multi = curl_multi_init() else { throw ClientError.curl("curl_multi_init failed") }
        self.multi = multi
        self.configuration = configuration
        self.logger = logger
        ccurl_multi_setopt_long(multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        // Several connections per host only matter for HTTP/1.1 origins; HTTP/2 requests wait for
        // and share one connection (PIPEWAIT). Where libcurl's h2c reuse bug forces a connection per
        // h2c request (see CurlTransfer), the connection cap must match the request cap, or requests
        // queue inside libcurl out of the scheduler's sight and a demand miss waits behind prefetch.
        let hostConnections = CurlTransfer.priorKnowledgeReuseIsBroken ? configuration.maximumInFlight : Self.http1ConnectionsPerHost
        ccurl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, hostConnections)
        ccurl_multi_setopt_long(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, configuration.maximumInFlight)
        scheduler.maximumInFlight = configuration.maximumInFlight
        scheduler.demandReserve = configuration.demandReserve
        scheduler.window.unmeasuredWindowBytes = configuration.unmeasuredPrefetchWindowBytes
        scheduler.window.openBDPs = configuration.openWindowInBDPs
        scheduler.window.pressuredBDPs = configuration.pressuredWindowInBDPs
        let thread = Thread { [self] in run() }
        thread.name = "streamvm-fetcher"
        thread.start()
    }

    deinit {
        shutdown()
        curl_multi_cleanup(multi)
    }

    /// Stops the transfer thread; queued and running requests fail with `.shutDown`. Idempotent.
    public func shutdown() {
        lock.lock()
        let wasStopping = stopping
        stopping = true
        lock.unlock()
        guard !wasStopping else { return }
        curl_multi_wakeup(multi)
        stopped.wait()
    }

    public func makeRequestID() -> RequestID {
        lock.lock()
        defer { lock.unlock() }
        nextID += 1
        return RequestID(value: nextID)
    }

    /// Queues `request`; `completion` runs on the fetcher thread and must return quickly.
    public func submit(_ request: FetchRequest, id: RequestID? = nil,
                       completion: @escaping @Sendable (Result<FetchedBody, FetchError>) -> Void) -> RequestID {
        let id = id ?? makeRequestID()
        if !send(.submit(CurlTransferSpec(id: id, request: request, completion: completion))) {
            completion(.failure(.shutDown))
        }
        return id
    }

    /// Fetches `request`; cancelling the calling task cancels the request.
    public func fetch(_ request: FetchRequest, id: RequestID? = nil) async throws -> FetchedBody {
        let id = id ?? makeRequestID()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<FetchedBody, any Error>) in
                _ = submit(request, id: id) { continuation.resume(with: $0.mapError { $0 as any Error }) }
            }
        } onCancel: {
            cancel(id)
        }
    }

    /// Cancels a queued or running request; its completion reports `.cancelled`.
    public func cancel(_ id: RequestID) { _ = send(.cancel(id)) }

    /// Moves a queued request to another priority (a prefetch that a reader now waits for becomes demand).
    public func reprioritize(_ id: RequestID, to priority: FetchPriority) { _ = send(.reprioritize(id, priority)) }

    /// The current bandwidth and RTT measurements.
    public var linkEstimate: LinkEstimate {
        lock.lock()
        defer { lock.unlock() }
        return publishedEstimate
    }

    /// Requests waiting and running, for progress displays and tests.
    public var load: (queued: Int, inFlight: Int) {
        lock.lock()
        defer { lock.unlock() }
        return publishedCounts
    }

    private func send(_ command: Command) -> Bool {
        lock.lock()
        guard !stopping else { lock.unlock(); return false }
        inbox.append(command)
        lock.unlock()
        curl_multi_wakeup(multi)
        return true
    }

    // MARK: transfer thread

    private func run() {
        var running: Int32 = 0
        while true {
            lock.lock()
            let commands = inbox
            inbox.removeAll(keepingCapacity: true)
            let stop = stopping
            lock.unlock()
            if stop { break }
            let now = monotonicSeconds()
            for command in commands { apply(command, now: now) }
            startAdmitted(now: now)
            curl_multi_perform(multi, &running)
            collectFinished()
            abortStalled(now: monotonicSeconds())
            let after = monotonicSeconds()
            estimator.tick(at: after, busy: active.values.contains { $0.isReceiving })
            publish()
            if after - lastStateLog >= 1, logger.logLevel <= .trace {
                lastStateLog = after
                logState()
            }
            // Wake at least every 50 ms to close estimator bins and check for stalls.
            curl_multi_poll(multi, nil, 0, 50, nil)
        }
        for spec in queued.values { spec.completion(.failure(.shutDown)) }
        queued.removeAll()
        for transfer in Array(active.values) { finish(transfer, with: .failure(.shutDown)) }
        stopped.signal()
    }

    private func apply(_ command: Command, now: Double) {
        switch command {
        case .submit(let spec):
            if cancelledBeforeSubmit.remove(spec.id) != nil {
                spec.completion(.failure(.cancelled))
                return
            }
            queued[spec.id] = spec
            scheduler.enqueue(spec.id, priority: spec.request.priority,
                              weightBytes: spec.request.expectedBytes ?? min(spec.request.maximumBytes, 1 << 20))
        case .cancel(let id):
            if let spec = queued.removeValue(forKey: id) {
                _ = scheduler.removeQueued(id)
                spec.completion(.failure(.cancelled))
            } else if let transfer = active[id] {
                finish(transfer, with: .failure(.cancelled))
            } else {
                // The cancel overtook its submit (both race through the inbox); remember it briefly.
                if cancelledBeforeSubmit.count > 4096 { cancelledBeforeSubmit.removeAll() }
                cancelledBeforeSubmit.insert(id)
            }
        case .reprioritize(let id, let priority):
            scheduler.reprioritize(id, to: priority)
            if let spec = queued[id] {
                var request = spec.request
                request.priority = priority
                queued[id] = CurlTransferSpec(id: id, request: request, completion: spec.completion)
            }
        }
    }

    private func startAdmitted(now: Double) {
        // A request's first-byte time is the path's RTT only if little was queued ahead of it; under a
        // full window it includes the queue, and a minimum of such samples would grow the BDP, the
        // window and the queue in turn.
        let link = estimator.estimate
        let queuedAhead = scheduler.prefetchBytesInFlight + scheduler.demandBytesInFlight
        let uncongested = link.bandwidthDelayProductBytes.map { queuedAhead <= $0 } ?? true
        for id in scheduler.admit(link: link, now: now) {
            guard let spec = queued.removeValue(forKey: id) else { scheduler.finished(id, link: estimator.estimate, now: now); continue }
            guard let transfer = CurlTransfer(id: id, request: spec.request, now: now, configuration: configuration,
                                              completion: spec.completion) else {
                scheduler.finished(id, link: estimator.estimate, now: now)
                spec.completion(.failure(.transport(code: -1, message: "curl_easy_init failed")))
                continue
            }
            transfer.attachContext()
            transfer.startedUncongested = uncongested
            transfer.onBytes = { [unowned self, unowned transfer] count, first in
                let time = monotonicSeconds()
                transfer.lastProgress = time
                estimator.received(count, at: time, startsBody: first)
                scheduler.received(transfer.id, bytes: count)
            }
            active[id] = transfer
            activeByHandle[transfer.handle] = id
            curl_multi_add_handle(multi, transfer.handle)
        }
    }

    private func collectFinished() {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle,
                  let id = activeByHandle[handle], let transfer = active[id] else { continue }
            let outcome = transfer.outcome(code: message.pointee.data.result)
            if case .success(let body) = outcome {
                estimator.firstByte(after: body.firstByteSeconds, at: monotonicSeconds(), uncongested: transfer.startedUncongested)
            }
            finish(transfer, with: outcome)
        }
    }

    /// Aborts transfers that received nothing for the stall timeout since their request went out.
    /// Requests still waiting for a connection are bounded by the connect timeout instead.
    private func abortStalled(now: Double) {
        for transfer in active.values {
            if !transfer.requestSent {
                guard transfer.checkRequestSent() else { continue }
                transfer.lastProgress = now
            }
            guard now - transfer.lastProgress > configuration.stallTimeoutSeconds else { continue }
            logger.debug("aborting stalled transfer", metadata: ["url": "\(transfer.request.url)"])
            finish(transfer, with: .failure(.stalled(seconds: now - transfer.lastProgress)))
        }
    }

    private func finish(_ transfer: CurlTransfer, with outcome: Result<FetchedBody, FetchError>) {
        curl_multi_remove_handle(multi, transfer.handle)
        active.removeValue(forKey: transfer.id)
        activeByHandle.removeValue(forKey: transfer.handle)
        scheduler.finished(transfer.id, link: estimator.estimate, now: monotonicSeconds())
        transfer.onBytes = nil
        transfer.completion(outcome)
    }

    /// Once a second at trace level: what the window and the link look like (throughput diagnosis).
    private func logState() {
        let link = estimator.estimate
        logger.trace("fetcher state", metadata: [
            "bandwidthMbit": "\(link.bandwidthBytesPerSecond.map { ($0 * 8 / 1e6 * 10).rounded() / 10 } ?? -1)",
            "rttMs": "\(link.rttSeconds.map { ($0 * 1e4).rounded() / 10 } ?? -1)",
            "windowKB": "\(scheduler.lastWindowBytes / 1000)",
            "prefetchKBInFlight": "\(scheduler.prefetchBytesInFlight / 1000)",
            "demandInFlight": "\(scheduler.demandInFlightCount)",
            "inFlight": "\(active.count)", "queued": "\(scheduler.queuedCount)",
            "receivedMB": "\(link.bytesReceived / 1_000_000)",
        ])
    }

    private func publish() {
        let estimate = estimator.estimate
        lock.lock()
        publishedEstimate = estimate
        publishedCounts = (scheduler.queuedCount, active.count)
        lock.unlock()
    }
}

/// `curl_global_init` must run once, before any other libcurl call, and is not thread-safe itself.
enum CurlGlobal {
    private static let once: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()
    static func initialize() { _ = once }
}

/// Seconds on the monotonic clock, for durations that must not jump with wall-clock changes.
public func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
