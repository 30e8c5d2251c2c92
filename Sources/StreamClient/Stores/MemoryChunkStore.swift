import Catalog
import Foundation

/// The last chunks read or fetched, decoded, in this process's memory: the first store the router
/// asks. A streamed resume faults on a chunk's pages one by one (16 pages per 64 KiB chunk), so the
/// other pages of a chunk cost a lookup and a page copy, not a cache file read and a hash. Bytes are
/// shared, never copied, between the store and its readers (arrays are copy-on-write and nobody
/// writes them). Bounded in bytes (chunk sizes range from 4 KiB to 16 MiB); the least recently used
/// chunk leaves first, and the newest is always kept.
public final class MemoryChunkStore: LocalChunkStore, @unchecked Sendable {
    /// 4 MiB = 64 chunks of 64 KiB: enough that a guest walking through a few regions at once reads
    /// each chunk from the disk cache once (what the page source's own resident list held before).
    public static let defaultCapacityBytes = 4 << 20

    public let name = "memory"
    public let isDurable = false
    public let capacityBytes: Int

    private let lock = NSLock()
    private var chunks: [ChunkID: (bytes: [UInt8], lastUse: UInt64)] = [:]
    private var totalBytes = 0
    private var clock: UInt64 = 0

    public init(capacityBytes: Int = MemoryChunkStore.defaultCapacityBytes) {
        self.capacityBytes = max(0, capacityBytes)
    }

    public var count: Int { lock.withLock { chunks.count } }

    public func contains(_ chunk: ChunkID) -> Bool { lock.withLock { chunks[chunk] != nil } }

    public func read(_ chunk: ChunkID, length: Int, range: Range<Int>?) -> [UInt8]? {
        let bytes: [UInt8]? = lock.withLock {
            guard let entry = chunks[chunk] else { return nil }
            clock += 1
            chunks[chunk]?.lastUse = clock
            return entry.bytes
        }
        guard let bytes, bytes.count == length else { return nil }
        guard let range, range != 0..<length else { return bytes }
        guard range.lowerBound >= 0, range.upperBound <= length else { return nil }
        return Array(bytes[range])
    }

    public func insert(_ chunk: ChunkID, bytes: [UInt8]) {
        lock.withLock {
            clock += 1
            totalBytes += bytes.count - (chunks[chunk]?.bytes.count ?? 0)
            chunks[chunk] = (bytes, clock)
            // A linear scan over a few dozen entries: cheaper than keeping an ordered list.
            while totalBytes > capacityBytes, chunks.count > 1,
                  let oldest = chunks.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
                totalBytes -= chunks.removeValue(forKey: oldest)?.bytes.count ?? 0
            }
        }
    }
}
