import Catalog
import NIOCore

/// The verdicts the server has reached, keyed by object and valid only for one file identity, plus
/// verified copies of small objects kept in memory (with their precomputed response headers). A value type guarded by the store's lock; every
/// operation is O(1) amortised so the lock is held for a dictionary lookup and little else.
struct VerificationTable {
    enum Verdict: Equatable {
        case good
        case corrupt(String)
    }

    enum Entry {
        /// Verified for the current identity; the copy when one is cached.
        case verified(VerifiedCopy?)
        case corrupt(String)
        /// Never verified, or the file changed since.
        case unknown
    }

    private struct Record {
        var identity: FileIdentity
        var verdict: Verdict
        var copy: VerifiedCopy?
        /// Second-chance bit of the CLOCK eviction policy: set on every hit, cleared as the hand passes.
        var referenced: Bool
    }

    private var records: [CatalogObject: Record] = [:]
    /// The request targets of the objects with a cached copy, so that the event loop can find a copy
    /// by the raw `:path` it was sent without parsing it; only the canonical spelling is a key.
    private var cachedTargets: [String: CatalogObject] = [:]
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
            if record.copy != nil, !record.referenced { records[object]!.referenced = true }
            return .verified(record.copy)
        }
    }

    /// The cached copy whose request target is exactly `target`, whatever its file is now (the
    /// caller compares identities). A hit counts as a use for eviction.
    mutating func copy(forTarget target: String) -> VerifiedCopy? {
        guard let object = cachedTargets[target], let record = records[object], let copy = record.copy else { return nil }
        if !record.referenced { records[object]!.referenced = true }
        return copy
    }

    mutating func record(_ object: CatalogObject, identity: FileIdentity, verdict: Verdict, copy: VerifiedCopy?) {
        let old = records[object]
        var kept = copy
        if kept == nil, let old, old.identity == identity, verdict == .good { kept = old.copy }
        if let oldCopy = old?.copy {
            cachedBytes -= oldCopy.bytes.readableBytes
            forgetTarget(of: oldCopy)
        }
        if let kept, kept.bytes.readableBytes > cacheLimit { records[object] = Record(identity: identity, verdict: verdict, copy: nil, referenced: false); return }
        records[object] = Record(identity: identity, verdict: verdict, copy: kept, referenced: false)
        guard let kept else { return }
        cachedBytes += kept.bytes.readableBytes
        if let target = kept.requestTarget { cachedTargets[target] = object }
        if old?.copy == nil { clock.append(object) }
        evictUntilWithinLimit(protecting: object)
    }

    mutating func remove(_ object: CatalogObject) {
        if let copy = records.removeValue(forKey: object)?.copy {
            cachedBytes -= copy.bytes.readableBytes
            forgetTarget(of: copy)
        }
    }

    private mutating func forgetTarget(of copy: VerifiedCopy) {
        if let target = copy.requestTarget { cachedTargets[target] = nil }
    }

    /// Drops cached copies (never verdicts) until the cache fits, giving recently hit objects a
    /// second chance. The clock list is compacted as stale names are met.
    private mutating func evictUntilWithinLimit(protecting newest: CatalogObject) {
        var steps = 0
        while cachedBytes > cacheLimit, !clock.isEmpty, steps < 3 * clock.count + 2 {
            steps += 1
            if hand >= clock.count { hand = 0 }
            let candidate = clock[hand]
            guard var record = records[candidate], let copy = record.copy else {
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
            record.copy = nil
            records[candidate] = record
            cachedBytes -= copy.bytes.readableBytes
            forgetTarget(of: copy)
            clock.swapAt(hand, clock.count - 1)
            clock.removeLast()
        }
    }
}
