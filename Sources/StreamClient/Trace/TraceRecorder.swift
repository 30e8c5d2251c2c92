import Catalog
import Foundation

/// Collects a run's first accesses as `RunTrace` records: when (host and guest time), how the bytes
/// came (cache, prefetch, demand miss) and how long the guest waited. Listeners (the prefetch driver)
/// hear of each access as it happens. Called on the guest's reading threads: cheap and locked briefly.
public final class TraceRecorder: AccessTraceSink, @unchecked Sendable {
    private let lock = NSLock()
    private let startedAt = monotonicSeconds()
    public let startedDate = Date()
    private var records: [RunTrace.Record] = []
    private var prefetched: Set<ChunkLocation> = []
    private var guestStartedAt: Double?
    private var readyAt: Double?
    private var stallSinceGuestStart = 0.0
    private var listeners: [@Sendable (ChunkLocation, Bool) -> Void] = []

    public init() {}

    /// `listener(location, waited)` runs for every first access, on the reading thread.
    public func addListener(_ listener: @escaping @Sendable (ChunkLocation, Bool) -> Void) {
        lock.withLock { listeners.append(listener) }
    }

    /// This run's prefetcher is fetching `location` (a later first touch of it is a prefetch hit).
    public func notePrefetched(_ location: ChunkLocation) {
        _ = lock.withLock { prefetched.insert(location) }
    }

    /// The vCPUs start now: guest time counts from here.
    public func guestStarted() { lock.withLock { if guestStartedAt == nil { guestStartedAt = monotonicSeconds() } } }

    /// The appliance printed its ready marker.
    public func ready() { lock.withLock { if readyAt == nil { readyAt = monotonicSeconds() } } }

    public func record(_ access: FirstAccess) {
        let location = ChunkLocation(role: access.role, index: access.chunkIndex)
        let waited = access.source == .fetched
        for listener in append(access) { listener(location, waited) }
    }

    /// Traced like a first access, but the listeners (the prefetch driver) are not told: an install
    /// ahead of the guest says nothing about where the guest is, and entering its cluster early made
    /// the scheduler cancel prefetches the guest then missed.
    public func recordInstalled(_ access: FirstAccess) {
        _ = append(access)
    }

    /// Adds the record; returns the listeners to notify.
    private func append(_ access: FirstAccess) -> [@Sendable (ChunkLocation, Bool) -> Void] {
        let now = monotonicSeconds()
        let location = ChunkLocation(role: access.role, index: access.chunkIndex)
        return lock.withLock { () -> [@Sendable (ChunkLocation, Bool) -> Void] in
            let outcome: RunTrace.Outcome
            switch access.source {
            case .zero: outcome = .zero
            case .overlay: outcome = .overlay
            case .fetched: outcome = .demandMiss
            case .cache: outcome = prefetched.contains(location) ? .prefetchHit : .cached
            }
            // Guest time excludes the time the guest spent waiting for the network, so traces from
            // slow and fast links line up.
            var guestSeconds: Double?
            if let guestStartedAt {
                guestSeconds = max(0, now - access.stallSeconds - guestStartedAt - stallSinceGuestStart)
                stallSinceGuestStart += access.stallSeconds
            }
            records.append(RunTrace.Record(location: location, chunk: access.chunk, offset: access.offset,
                                           wallSeconds: now - startedAt, guestSeconds: guestSeconds, outcome: outcome,
                                           stallSeconds: access.stallSeconds))
            return self.listeners
        }
    }

    /// The trace so far.
    public func trace(appliance: String, version: String, manifest: Digest, prefetch: PrefetchMode, model: Digest?) -> RunTrace {
        lock.withLock {
            RunTrace(appliance: appliance, version: version, manifest: manifest, prefetch: prefetch.rawValue, model: model,
                     started: startedDate, readySeconds: readyAt.map { $0 - startedAt }, records: records)
        }
    }

    /// Stall figures of the run: all stalls, and those after the ready marker.
    /// First touches recorded so far.
    public var firstTouchCount: Int { lock.withLock { records.count } }

    /// When the guest started and printed its ready marker, in seconds since this recorder was made.
    public var milestones: (guestStarted: Double?, ready: Double?) {
        lock.withLock { (guestStartedAt.map { $0 - startedAt }, readyAt.map { $0 - startedAt }) }
    }

    public func stallSummary() -> (count: Int, seconds: Double, afterReadyCount: Int, afterReadySeconds: Double) {
        lock.withLock {
            let stalls = records.filter { $0.stallSeconds > 0 }
            let ready = readyAt.map { $0 - startedAt }
            let after = stalls.filter { ready != nil && $0.wallSeconds > ready! }
            return (stalls.count, stalls.reduce(0) { $0 + $1.stallSeconds }, after.count, after.reduce(0) { $0 + $1.stallSeconds })
        }
    }
}
