import Catalog
import NIOCore

/// The verdicts the server has reached, keyed by object and valid only for one file identity, plus
/// verified copies of small objects kept in memory. A value type guarded by the store's lock; every
/// operation is O(1) amortised so the lock is held for a dictionary lookup and little else.
struct VerificationTable {
    enum Verdict: Equatable {
        case good
        case corrupt(String)
    }

    enum Entry {
        /// Verified for the current identity; the bytes when a copy is cached.
        case verified(ByteBuffer?)
        case corrupt(String)
        /// Never verified, or the file changed since.
        case unknown
    }

    private struct Record {
        var identity: FileIdentity
        var verdict: Verdict
        var bytes: ByteBuffer?
        /// Second-chance bit of the CLOCK eviction policy: set on every hit, cleared as the hand passes.
        var referenced: Bool
    }

    private var records: [CatalogObject: Record] = [:]
    /// Objects with cached bytes, in insertion order; the CLOCK hand walks it.
    private var clock: [CatalogObject] = []
    private var hand = 0
    private(set) var cachedBytes = 0
    let cacheLimit: Int

    init(cacheLimit: Int) {
        self.cacheLimit = cacheLimit
    }

    mutating func entry(for object: CatalogObject, identity: FileIdentity) -> Entry {
        guard let record = records[object], record.identity == identity else { return .unknown }
        switch record.verdict {
        case .corrupt(let reason):
            return .corrupt(reason)
        case .good:
            if record.bytes != nil, !record.referenced { records[object]!.referenced = true }
            return .verified(record.bytes)
        }
    }

    mutating func record(_ object: CatalogObject, identity: FileIdentity, verdict: Verdict, bytes: ByteBuffer?) {
        let old = records[object]
        var keptBytes = bytes
        if keptBytes == nil, let old, old.identity == identity, verdict == .good { keptBytes = old.bytes }
        if let oldBytes = old?.bytes { cachedBytes -= oldBytes.readableBytes }
        if let keptBytes, keptBytes.readableBytes > cacheLimit { records[object] = Record(identity: identity, verdict: verdict, bytes: nil, referenced: false); return }
        records[object] = Record(identity: identity, verdict: verdict, bytes: keptBytes, referenced: false)
        guard let keptBytes else { return }
        cachedBytes += keptBytes.readableBytes
        if old?.bytes == nil { clock.append(object) }
        evictUntilWithinLimit(protecting: object)
    }

    mutating func remove(_ object: CatalogObject) {
        if let bytes = records.removeValue(forKey: object)?.bytes { cachedBytes -= bytes.readableBytes }
    }

    /// Drops cached copies (never verdicts) until the cache fits, giving recently hit objects a
    /// second chance. The clock list is compacted as stale names are met.
    private mutating func evictUntilWithinLimit(protecting newest: CatalogObject) {
        var steps = 0
        while cachedBytes > cacheLimit, !clock.isEmpty, steps < 3 * clock.count + 2 {
            steps += 1
            if hand >= clock.count { hand = 0 }
            let candidate = clock[hand]
            guard var record = records[candidate], let bytes = record.bytes else {
                clock.swapAt(hand, clock.count - 1)
                clock.removeLast()
                continue
            }
            if record.referenced || candidate == newest {
                record.referenced = false
                records[candidate] = record
                hand += 1
                continue
            }
            record.bytes = nil
            records[candidate] = record
            cachedBytes -= bytes.readableBytes
            clock.swapAt(hand, clock.count - 1)
            clock.removeLast()
        }
    }
}
