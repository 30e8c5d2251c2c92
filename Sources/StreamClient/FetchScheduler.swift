/// Identifies one submitted request so it can be cancelled or re-prioritised while queued.
public struct RequestID: Hashable, Sendable, CustomStringConvertible {
    public let value: UInt64
    public var description: String { "#\(value)" }
}

/// Decides which queued request starts next. Demand requests start first, in arrival order, limited
/// only by the stream cap. Prefetch requests start in rank order, and only while the bytes already in
/// flight fit in the prefetch window, which `PrefetchWindowPolicy` sizes from the measured link and
/// from how recently demand misses happened (wide to fill the pipe, narrow while misses must not
/// queue behind prefetch).
/// A pure value type; the transfer loop owns it on its thread.
struct FetchScheduler {
    struct Entry {
        let id: RequestID
        var priority: FetchPriority
        /// Bytes this request will bring in, for the window (its expected or maximum size).
        let weightBytes: Int
        /// Of those, bytes not received yet: what the request still has in the network.
        var outstandingBytes: Int
        let sequence: UInt64
    }

    /// Streams in flight at most (HTTP/2 servers commonly allow 100 or 128; nginx allows 128).
    var maximumInFlight = 96
    /// Slots of `maximumInFlight` that prefetch never takes, so a demand miss always starts at once
    /// (with libcurl's h2c workaround each request is a connection, and the connection cap is the same).
    var demandReserve = 8
    /// Sizes the prefetch window; sees every change between "demand pending" and "none pending".
    var window = PrefetchWindowPolicy()

    private var demandQueue: [Entry] = []
    private var demandHead = 0
    /// Sorted so that the next prefetch to start is last (cheap removal).
    private var prefetchQueue: [Entry] = []
    private var nextSequence: UInt64 = 0
    private(set) var inFlight: [RequestID: Entry] = [:]
    private(set) var demandBytesInFlight = 0
    private(set) var prefetchBytesInFlight = 0
    private(set) var demandInFlightCount = 0
    /// The prefetch window the last `admit` used (for diagnostics).
    private(set) var lastWindowBytes = 0

    var queuedCount: Int { demandQueue.count - demandHead + prefetchQueue.count }
    var queuedDemandCount: Int { demandQueue.count - demandHead }
    var isDemandPending: Bool { demandInFlightCount > 0 || queuedDemandCount > 0 }
    /// A demand request is pending while prefetch is queued or in flight: only then can prefetch delay
    /// it, so only then does the window narrow (loading a catalogue before any prefetch does not).
    var demandCompetesWithPrefetch: Bool { isDemandPending && (prefetchBytesInFlight > 0 || !prefetchQueue.isEmpty) }

    mutating func enqueue(_ id: RequestID, priority: FetchPriority, weightBytes: Int) {
        let entry = Entry(id: id, priority: priority, weightBytes: max(1, weightBytes), outstandingBytes: max(1, weightBytes),
                          sequence: nextSequence)
        nextSequence += 1
        insert(entry)
    }

    private mutating func insert(_ entry: Entry) {
        switch entry.priority {
        case .demand:
            demandQueue.append(entry)
        case .prefetch:
            let index = prefetchInsertionIndex(for: entry)
            prefetchQueue.insert(entry, at: index)
        }
    }

    /// Binary search in the descending (rank, sequence) order.
    private func prefetchInsertionIndex(for entry: Entry) -> Int {
        let key = sortKey(entry)
        var low = 0, high = prefetchQueue.count
        while low < high {
            let mid = (low + high) / 2
            if sortKey(prefetchQueue[mid]) > key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private func sortKey(_ entry: Entry) -> (Double, UInt64) {
        if case .prefetch(let rank) = entry.priority { return (rank, entry.sequence) }
        return (-.infinity, entry.sequence)
    }

    /// Removes a queued request; returns false if it is not queued (already started or unknown).
    mutating func removeQueued(_ id: RequestID) -> Bool {
        if let index = prefetchQueue.firstIndex(where: { $0.id == id }) {
            prefetchQueue.remove(at: index)
            return true
        }
        if let index = demandQueue[demandHead...].firstIndex(where: { $0.id == id }) {
            demandQueue.remove(at: index)
            return true
        }
        return false
    }

    /// Changes a queued request's priority. A request already in flight keeps going (its bytes are
    /// on the way); promoting it to demand moves its bytes out of the prefetch window.
    mutating func reprioritize(_ id: RequestID, to priority: FetchPriority) {
        if var entry = inFlight[id] {
            if entry.priority != .demand, priority == .demand {
                prefetchBytesInFlight -= entry.outstandingBytes
                demandBytesInFlight += entry.outstandingBytes
                demandInFlightCount += 1
                entry.priority = .demand
                inFlight[id] = entry
            }
            return
        }
        guard let index = prefetchQueue.firstIndex(where: { $0.id == id }) else { return }
        var entry = prefetchQueue.remove(at: index)
        entry.priority = priority
        insert(entry)
    }

    /// Requests to start now, in order; they count as in flight until `finished` is called.
    /// Requests enqueued, promoted or removed since the last call take effect for the window at `now`.
    mutating func admit(link: LinkEstimate, now: Double) -> [RequestID] {
        window.observe(demandPending: demandCompetesWithPrefetch, link: link, at: now)
        var started: [RequestID] = []
        while demandHead < demandQueue.count, inFlight.count < maximumInFlight {
            let entry = demandQueue[demandHead]
            demandHead += 1
            inFlight[entry.id] = entry
            demandBytesInFlight += entry.outstandingBytes
            demandInFlightCount += 1
            started.append(entry.id)
        }
        if demandHead > 64, demandHead * 2 > demandQueue.count {
            demandQueue.removeFirst(demandHead)
            demandHead = 0
        }
        guard demandHead == demandQueue.count else { return started }
        let windowBytes = window.windowBytes(link: link, at: now)
        lastWindowBytes = windowBytes
        let prefetchSlots = max(1, maximumInFlight - demandReserve)
        while let next = prefetchQueue.last, inFlight.count < prefetchSlots {
            let occupied = prefetchBytesInFlight + demandBytesInFlight
            // One prefetch may always run, so objects larger than the window still make progress.
            guard prefetchBytesInFlight == 0 || occupied + next.weightBytes <= windowBytes else { break }
            prefetchQueue.removeLast()
            inFlight[next.id] = next
            prefetchBytesInFlight += next.outstandingBytes
            started.append(next.id)
        }
        return started
    }

    /// Body bytes of a started request arrived: they are no longer in the network, so they leave the
    /// window at once. Counting whole requests until they end would hold the window shut while a
    /// server interleaves many responses (they all end late, together), leaving the link idle for a
    /// round trip after each such batch; and bytes already received queue ahead of no demand miss.
    mutating func received(_ id: RequestID, bytes: Int) {
        guard var entry = inFlight[id], entry.outstandingBytes > 0 else { return }
        let drop = min(bytes, entry.outstandingBytes)
        entry.outstandingBytes -= drop
        inFlight[id] = entry
        if entry.priority == .demand { demandBytesInFlight -= drop } else { prefetchBytesInFlight -= drop }
    }

    /// A started request ended (done, failed or cancelled) at `now`.
    mutating func finished(_ id: RequestID, link: LinkEstimate, now: Double) {
        guard let entry = inFlight.removeValue(forKey: id) else { return }
        if entry.priority == .demand {
            demandBytesInFlight -= entry.outstandingBytes
            demandInFlightCount -= 1
            window.observe(demandPending: demandCompetesWithPrefetch, link: link, at: now)
        } else {
            prefetchBytesInFlight -= entry.outstandingBytes
        }
    }
}
