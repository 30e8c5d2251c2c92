import Catalog
import Foundation

/// Gets verified chunk bytes from the cache or, on a miss, from the origins, and stores what it
/// fetched in the cache. Concurrent requests for one chunk share one fetch; a reader waiting for a
/// chunk that is being prefetched raises that fetch to demand priority.
public final class ChunkLoader: @unchecked Sendable {
    public let client: CatalogClient
    public let cache: ChunkCache?

    private final class InFlight {
        let task: Task<[UInt8], any Error>
        let ticket: FetchTicket
        var demandWaiters = 0
        init(task: Task<[UInt8], any Error>, ticket: FetchTicket) {
            self.task = task
            self.ticket = ticket
        }
    }

    private let lock = NSLock()
    private var inFlight: [ChunkID: InFlight] = [:]

    public init(client: CatalogClient, cache: ChunkCache?) {
        self.client = client
        self.cache = cache
    }

    /// Whether a chunk can be read without the network.
    public func isLocal(_ chunk: ChunkID) -> Bool { cache?.contains(chunk) ?? false }

    /// Verified bytes of `ref` (all `length` of them) and whether they had to be fetched.
    public func load(_ ref: ChunkRef, length: Int, dictionary: ZstdDictionary?,
                     priority: FetchPriority = .demand) async throws -> (bytes: [UInt8], fetched: Bool) {
        if let cached = cache?.read(ref.id, length: length) { return (cached, false) }
        let flight = startOrJoin(ref, length: length, dictionary: dictionary, priority: priority)
        if priority == .demand { lock.withLock { flight.demandWaiters += 1 } }
        defer {
            if priority == .demand { lock.withLock { flight.demandWaiters -= 1 } }
        }
        return (try await flight.task.value, true)
    }

    /// Starts fetching `ref` in the background at prefetch `rank` unless it is local or already coming.
    public func prefetch(_ ref: ChunkRef, length: Int, dictionary: ZstdDictionary?, rank: Double) {
        if cache?.contains(ref.id) == true { return }
        _ = startOrJoin(ref, length: length, dictionary: dictionary, priority: .prefetch(rank: rank))
    }

    /// Changes the rank of a queued prefetch (no effect once a reader waits for it).
    public func reorderPrefetch(_ chunk: ChunkID, rank: Double) {
        lock.lock()
        let flight = inFlight[chunk]
        lock.unlock()
        guard let flight, flight.demandWaiters == 0, flight.ticket.priority != .demand else { return }
        flight.ticket.raise(to: .prefetch(rank: rank))
    }

    /// Cancels a prefetch that no reader waits for.
    public func cancelPrefetch(_ chunk: ChunkID) {
        lock.lock()
        defer { lock.unlock() }
        guard let flight = inFlight[chunk], flight.demandWaiters == 0, flight.ticket.priority != .demand else { return }
        flight.task.cancel()
        inFlight.removeValue(forKey: chunk)
    }

    private func startOrJoin(_ ref: ChunkRef, length: Int, dictionary: ZstdDictionary?,
                             priority: FetchPriority) -> InFlight {
        lock.lock()
        defer { lock.unlock() }
        if let existing = inFlight[ref.id] {
            if priority == .demand, existing.ticket.priority != .demand { existing.ticket.raise(to: .demand) }
            return existing
        }
        let ticket = FetchTicket(priority: priority)
        let task = Task<[UInt8], any Error> { [client, cache] in
            defer { self.finished(ref.id, ticket: ticket) }
            let chunk = try await client.loadChunk(ref, length: length, dictionary: dictionary, ticket: ticket)
            do {
                try cache?.insert(ref.id, bytes: chunk.bytes)
            } catch {
                // The bytes are verified; a full or unwritable cache only costs a refetch later.
                client.logger.warning("chunk not cached", metadata: ["chunk": "\(ref.id)", "error": "\(error)"])
            }
            return chunk.bytes
        }
        let flight = InFlight(task: task, ticket: ticket)
        inFlight[ref.id] = flight
        return flight
    }

    private func finished(_ chunk: ChunkID, ticket: FetchTicket) {
        lock.lock()
        if inFlight[chunk]?.ticket === ticket { inFlight.removeValue(forKey: chunk) }
        lock.unlock()
    }
}
