import Catalog
import Foundation
import Logging

/// The one path every chunk takes: reads go through the local stores in order (memory, then the
/// disk cache) and, when none has the chunk, to the origin store; what the origin delivers is
/// handed to every waiting reader first and then written back into each local store (the durable
/// disk write, temp file + fsync + rename, happens after the readers have their bytes).
///
/// - One in-flight map: a chunk being fetched has one entry, whoever asked for it (a demand read, a
///   prefetch, a blocked fault thread); a second request joins the first. An entry stays until the
///   chunk is durable, so a reader arriving during the disk write gets the bytes from the entry.
/// - A reader waiting for a chunk being prefetched raises that fetch to demand priority.
/// - Readers may wait asynchronously (`load`) or block their own thread (`loadBlocking`, for fault
///   and vCPU threads that must answer synchronously; no task is spawned for the wait).
/// - Observers hear of each chunk that became local by a fetch (`observeArrivals`), so code that
///   waits for prefetched chunks is pushed, not polling.
public final class ChunkRouter: @unchecked Sendable {
    public let client: CatalogClient
    /// The durable disk cache, when there is one (pins, `streamvm cache`).
    public let cache: ChunkCache?
    public let memory: MemoryChunkStore
    /// Read in this order; fetched chunks are written to each.
    public let localStores: [any LocalChunkStore]
    public let origin: any RemoteChunkStore
    private let logger: Logger

    /// A fetch in progress. Guarded by the router's `condition`.
    private final class Flight: @unchecked Sendable {
        let ticket: FetchTicket
        var task: Task<Void, Never>?
        var demandWaiters = 0
        /// Set once the origin answered; the entry then stays until the durable write is done.
        var result: Result<[UInt8], any Error>?
        var waiters: [CheckedContinuation<[UInt8], any Error>] = []
        init(ticket: FetchTicket) { self.ticket = ticket }
        /// The bytes, once delivered (nil while fetching or after a failure).
        var delivered: [UInt8]? {
            if case .success(let bytes)? = result { return bytes }
            return nil
        }
    }

    public struct Observation: Hashable, Sendable {
        fileprivate let id: UInt64
    }

    /// Guards the in-flight map and observers; blocked readers wait on it.
    private let condition = NSCondition()
    private var inFlight: [ChunkID: Flight] = [:]
    private var observers: [UInt64: @Sendable (ChunkID) -> Void] = [:]
    private var nextObservation: UInt64 = 0
    private var fetches = 0

    /// Memory, then `cache` (when given), then the origins of `client`.
    public convenience init(client: CatalogClient, cache: ChunkCache?,
                            memoryBytes: Int = MemoryChunkStore.defaultCapacityBytes) {
        let memory = MemoryChunkStore(capacityBytes: memoryBytes)
        self.init(client: client, cache: cache, memory: memory, localStores: [memory] + (cache.map { [$0] } ?? []),
                  origin: OriginChunkStore(client: client))
    }

    /// Composes other stores (the first of `localStores` should be `memory`, which fetched and
    /// disk-read chunks are promoted into).
    public init(client: CatalogClient, cache: ChunkCache?, memory: MemoryChunkStore, localStores: [any LocalChunkStore],
                origin: any RemoteChunkStore) {
        self.client = client
        self.cache = cache
        self.memory = memory
        self.localStores = localStores
        self.origin = origin
        self.logger = client.logger
    }

    /// Whether a chunk can be read without the network (a local store has it, or it was fetched and
    /// is being written to disk).
    public func isLocal(_ chunk: ChunkID) -> Bool {
        if localStores.contains(where: { $0.contains(chunk) }) { return true }
        return condition.withLock { inFlight[chunk]?.delivered != nil }
    }

    /// `range` of the chunk (all of it when nil) from the first local store that has it, or nil.
    /// A whole chunk read from a store after the first is kept in memory too.
    public func readLocal(_ chunk: ChunkID, length: Int, range: Range<Int>? = nil) -> [UInt8]? {
        for (position, store) in localStores.enumerated() {
            guard let bytes = store.read(chunk, length: length, range: range) else { continue }
            if position > 0, range == nil || range == 0..<length { memory.insert(chunk, bytes: bytes) }
            return bytes
        }
        return nil
    }

    /// Verified bytes of the whole chunk and whether this reader had to wait for the network.
    public func load(_ ref: ChunkRef, length: Int, dictionary: ZstdDictionary?,
                     priority: FetchPriority = .demand) async throws -> (bytes: [UInt8], fetched: Bool) {
        let request = ChunkRequest(ref: ref, length: length, dictionary: dictionary)
        switch lookUp(request, priority: priority) {
        case .local(let bytes), .delivered(let bytes):
            return (bytes, false)
        case .waiting(let flight):
            defer { if priority == .demand { condition.withLock { flight.demandWaiters -= 1 } } }
            let bytes = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Error>) in
                condition.lock()
                if let result = flight.result {
                    condition.unlock()
                    continuation.resume(with: result)
                } else {
                    flight.waiters.append(continuation)
                    condition.unlock()
                }
            }
            return (bytes, true)
        }
    }

    /// `load` for a thread that must answer synchronously (a userfaultfd or vCPU thread, never a
    /// Swift concurrency thread): it blocks on the in-flight entry itself.
    public func loadBlocking(_ ref: ChunkRef, length: Int, dictionary: ZstdDictionary?) throws -> (bytes: [UInt8], fetched: Bool) {
        let request = ChunkRequest(ref: ref, length: length, dictionary: dictionary)
        switch lookUp(request, priority: .demand) {
        case .local(let bytes), .delivered(let bytes):
            return (bytes, false)
        case .waiting(let flight):
            condition.lock()
            defer {
                flight.demandWaiters -= 1
                condition.unlock()
            }
            while flight.result == nil { condition.wait() }
            return (try flight.result!.get(), true)
        }
    }

    /// Starts fetching `ref` in the background at prefetch `rank` unless it is local or already coming.
    public func prefetch(_ ref: ChunkRef, length: Int, dictionary: ZstdDictionary?, rank: Double) {
        if localStores.contains(where: { $0.contains(ref.id) }) { return }
        _ = join(ChunkRequest(ref: ref, length: length, dictionary: dictionary), priority: .prefetch(rank: rank), waiting: false,
                 checkLocal: true)
    }

    /// Changes the rank of a queued prefetch (no effect once a reader waits for it).
    public func reorderPrefetch(_ chunk: ChunkID, rank: Double) {
        let flight = condition.withLock { inFlight[chunk] }
        guard let flight, condition.withLock({ flight.demandWaiters == 0 && flight.result == nil }),
              flight.ticket.priority != .demand else { return }
        flight.ticket.raise(to: .prefetch(rank: rank))
    }

    /// Cancels a prefetch that no reader waits for.
    public func cancelPrefetch(_ chunk: ChunkID) {
        condition.lock()
        defer { condition.unlock() }
        guard let flight = inFlight[chunk], flight.result == nil, flight.demandWaiters == 0, flight.ticket.priority != .demand else { return }
        flight.task?.cancel()
        inFlight.removeValue(forKey: chunk)
    }

    /// Calls `body` (on the fetching task; keep it quick) with each chunk that becomes local by a
    /// fetch, right after its bytes went to the readers waiting for it.
    public func observeArrivals(_ body: @escaping @Sendable (ChunkID) -> Void) -> Observation {
        condition.withLock {
            nextObservation += 1
            observers[nextObservation] = body
            return Observation(id: nextObservation)
        }
    }

    public func stopObserving(_ observation: Observation) {
        _ = condition.withLock { observers.removeValue(forKey: observation.id) }
    }

    /// Fetches this router started (one per chunk however many readers joined it).
    public var fetchesStarted: Int { condition.withLock { fetches } }

    /// Fetches in flight or being made durable (tests, diagnostics).
    public var inFlightCount: Int { condition.withLock { inFlight.count } }

    // MARK: the in-flight map

    private enum Joined {
        /// A local store has the chunk.
        case local([UInt8])
        /// The fetch is done and the bytes are being made durable.
        case delivered([UInt8])
        case waiting(Flight)
    }

    /// The local stores, then the in-flight map (a waiting reader joins or starts the fetch).
    private func lookUp(_ request: ChunkRequest, priority: FetchPriority) -> Joined {
        let chunk = request.ref.id
        if let bytes = readLocal(chunk, length: request.length) { return .local(bytes) }
        if let joined = join(request, priority: priority, waiting: true, checkLocal: true) { return joined }
        // A fetch finished between the two looks and its bytes are in a store now.
        if let bytes = readLocal(chunk, length: request.length) { return .local(bytes) }
        return join(request, priority: priority, waiting: true, checkLocal: false)!
    }

    /// Joins the fetch of `request.ref` or starts it. A waiting demand reader is counted (so the
    /// fetch is not cancelled under it) and raises a prefetch to demand.
    /// Returns nil, starting nothing, when `checkLocal` and a local store has the chunk.
    private func join(_ request: ChunkRequest, priority: FetchPriority, waiting: Bool, checkLocal: Bool) -> Joined? {
        let chunk = request.ref.id
        condition.lock()
        defer { condition.unlock() }
        if let flight = inFlight[chunk] {
            if case .success(let bytes)? = flight.result { return .delivered(bytes) }
            if waiting, priority == .demand {
                flight.demandWaiters += 1
                if flight.ticket.priority != .demand { flight.ticket.raise(to: .demand) }
            }
            return .waiting(flight)
        }
        // The previous fetch of this chunk may have finished between the caller's look at the
        // local stores and now; its entry leaves the map only once the bytes are stored.
        if checkLocal, localStores.contains(where: { $0.contains(chunk) }) { return nil }
        let flight = Flight(ticket: FetchTicket(priority: priority))
        if waiting, priority == .demand { flight.demandWaiters += 1 }
        inFlight[chunk] = flight
        fetches += 1
        let origin = self.origin
        flight.task = Task { [self] in
            let result: Result<[UInt8], any Error>
            do { result = .success(try await origin.fetch(request, ticket: flight.ticket)) } catch { result = .failure(error) }
            deliver(chunk, flight: flight, result: result)
        }
        return .waiting(flight)
    }

    /// Hands the result to every reader, then makes fetched bytes durable and drops the entry.
    private func deliver(_ chunk: ChunkID, flight: Flight, result: Result<[UInt8], any Error>) {
        if case .success(let bytes) = result { memory.insert(chunk, bytes: bytes) }
        condition.lock()
        flight.result = result
        let waiters = flight.waiters
        flight.waiters = []
        let current = inFlight[chunk] === flight
        if case .failure = result, current { inFlight.removeValue(forKey: chunk) }
        let observers = Array(self.observers.values)
        condition.broadcast()
        condition.unlock()
        for waiter in waiters { waiter.resume(with: result) }
        guard case .success(let bytes) = result else { return }
        for observer in observers { observer(chunk) }
        for store in localStores where store !== memory {
            do {
                try store.insert(chunk, bytes: bytes)
            } catch {
                // The bytes are verified and delivered; a full or unwritable cache costs a refetch later.
                logger.warning("chunk not cached", metadata: ["chunk": "\(chunk)", "store": "\(store.name)", "error": "\(error)"])
            }
        }
        condition.withLock {
            if inFlight[chunk] === flight { inFlight.removeValue(forKey: chunk) }
        }
    }
}
