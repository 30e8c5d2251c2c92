import Catalog
import Foundation
import Logging

/// Runs a `PrefetchScheduler` against the real world: performs its fetch and cancel actions on the
/// artifacts' `LazyImage`s, feeds it the guest's first accesses and the fetcher's link estimate, and
/// notices finished prefetches by polling the few outstanding chunks (a chunk is done when local).
public final class PrefetchDriver: @unchecked Sendable {
    /// How often finished prefetches and the link estimate are checked; short against one RTT of a WAN.
    public static let tickInterval: Duration = .milliseconds(10)
    /// An outstanding prefetch not local after this long is treated as failed and retried later
    /// (the loader drops failed background fetches silently).
    public static let prefetchTimeoutSeconds = 60.0

    public struct Statistics: Sendable, Codable, Equatable {
        public var prefetchesIssued = 0
        public var prefetchesCompleted = 0
        public var prefetchesCancelled = 0
        public var prefetchesTimedOut = 0
        public var bufferedBytesAtStart = 0
        public var bufferingSeconds: Double?
    }

    private let lock = NSLock()
    private var scheduler: PrefetchScheduler<ContinuousClock>
    private let targets: [ArtifactRole: any PrefetchTarget]
    private let link: @Sendable () -> (bandwidth: Double?, rtt: Double?)
    private let onPrefetched: @Sendable (ChunkLocation) -> Void
    private let logger: Logger
    private var issuedAt: [ChunkLocation: Double] = [:]
    private var started = false
    private var stopped = false
    private var guestMayStart = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var statistics = Statistics()
    private var loop: Task<Void, Never>?
    private let createdAt = monotonicSeconds()

    /// `link` reports the fetcher's bandwidth (bytes/s) and RTT (s); `onPrefetched` hears of every
    /// chunk this run prefetches, when it is issued (the trace recorder uses it to tell prefetch hits
    /// from chunks that were cached before the run; only chunks not yet local are ever issued).
    public init(scheduler: PrefetchScheduler<ContinuousClock>, targets: [ArtifactRole: any PrefetchTarget],
                link: @escaping @Sendable () -> (bandwidth: Double?, rtt: Double?),
                onPrefetched: @escaping @Sendable (ChunkLocation) -> Void = { _ in }, logger: Logger) {
        self.scheduler = scheduler
        self.targets = targets
        self.link = link
        self.onPrefetched = onPrefetched
        self.logger = logger
    }

    deinit { lock.withLock { loop?.cancel() } }

    public var stats: Statistics { lock.withLock { statistics } }

    /// Plans the run and starts streaming.
    public func start() {
        let actions = lock.withLock { () -> [PrefetchScheduler<ContinuousClock>.Action] in
            guard !started else { return [] }
            started = true
            return scheduler.start()
        }
        let task = Task.detached { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.tickInterval)
                guard let self else { return }
                self.tick()
            }
        }
        lock.withLock { if stopped { task.cancel() } else { loop = task } }
        perform(actions)
    }

    /// Stops issuing prefetches (those in flight finish or are dropped by the loader).
    public func stop() {
        let pending = lock.withLock { () -> [ChunkLocation] in
            stopped = true
            loop?.cancel()
            loop = nil
            defer { issuedAt.removeAll() }
            return Array(issuedAt.keys)
        }
        for location in pending { targets[location.role]?.cancelPrefetch(chunk: location.index) }
        releaseWaiters()
    }

    /// Returns once the scheduler lets the guest run (or the driver was stopped).
    public func waitUntilGuestMayStart() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = lock.withLock { () -> Bool in
                if guestMayStart || stopped { return true }
                waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Startup bytes already local and what the scheduler wants local before the guest starts.
    public var bufferProgress: (buffered: Int, target: Int) {
        lock.withLock { (scheduler.bufferedStartupBytes, scheduler.bufferTargetBytes) }
    }

    /// Everything outstanding finished and nothing is left to issue.
    public var isIdle: Bool { lock.withLock { scheduler.isIdle } }

    /// A first access of the guest (from the trace recorder).
    public func accessed(_ location: ChunkLocation, waited: Bool) {
        let actions = lock.withLock { () -> [PrefetchScheduler<ContinuousClock>.Action] in
            issuedAt.removeValue(forKey: location)
            return scheduler.accessed(location, waited: waited)
        }
        perform(actions)
    }

    func tick() {
        let estimate = link()
        let now = monotonicSeconds()
        let actions = lock.withLock { () -> [PrefetchScheduler<ContinuousClock>.Action] in
            var actions = scheduler.tick(bandwidthBytesPerSecond: estimate.bandwidth, rttSeconds: estimate.rtt)
            for (location, issued) in issuedAt {
                if targets[location.role]?.isLocal(chunk: location.index) == true {
                    issuedAt.removeValue(forKey: location)
                    statistics.prefetchesCompleted += 1
                    actions += scheduler.fetched(location)
                } else if now - issued > Self.prefetchTimeoutSeconds {
                    issuedAt.removeValue(forKey: location)
                    statistics.prefetchesTimedOut += 1
                    targets[location.role]?.cancelPrefetch(chunk: location.index)
                    actions += scheduler.failed(location)
                }
            }
            return actions
        }
        perform(actions)
    }

    private func perform(_ actions: [PrefetchScheduler<ContinuousClock>.Action]) {
        var release = false
        for action in actions {
            switch action {
            case .fetch(let location, let rank):
                lock.withLock {
                    issuedAt[location] = monotonicSeconds()
                    statistics.prefetchesIssued += 1
                }
                onPrefetched(location)
                targets[location.role]?.prefetch(chunk: location.index, rank: rank)
            case .cancel(let location):
                lock.withLock {
                    issuedAt.removeValue(forKey: location)
                    statistics.prefetchesCancelled += 1
                }
                targets[location.role]?.cancelPrefetch(chunk: location.index)
            case .startGuest(let bufferedBytes):
                lock.withLock {
                    statistics.bufferedBytesAtStart = bufferedBytes
                    statistics.bufferingSeconds = monotonicSeconds() - createdAt
                }
                logger.info("guest may start", metadata: ["buffered_bytes": "\(bufferedBytes)"])
                release = true
            }
        }
        if release { releaseWaiters() }
    }

    private func releaseWaiters() {
        let waiting = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            guestMayStart = true
            defer { waiters.removeAll() }
            return waiters
        }
        for waiter in waiting { waiter.resume() }
    }
}
