import Hypervisor

/// Host-wide index of the engine's reference pages: by full fingerprint (identical pages) and by
/// `BlockHash` bucket (patch candidates, one per bucket as in the Difference Engine: a newer
/// reference takes over a bucket). Every lookup that returns a reference counts the caller as a
/// user, so a reference cannot be forgotten between being found and being used.
final class ReferenceIndex: Sendable {
    private struct Tables {
        var exact: [PageFingerprint: [ReferencePage]] = [:]
        var firstBlock: [Int: ReferencePage] = [:]
        var secondBlock: [Int: ReferencePage] = [:]
        var live = 0
    }

    let pageSize: Int
    private let tables = Locked(Tables())

    init(pageSize: Int) { self.pageSize = pageSize }

    /// References alive (each holds one page of host memory).
    var liveReferences: Int { tables.withLock { $0.live } }

    /// A reference with exactly `page`'s bytes, acquired for the caller.
    func acquireIdentical(_ page: UnsafeRawBufferPointer, fingerprint: PageFingerprint) -> ReferencePage? {
        tables.withLock { tables in
            guard let match = tables.exact[fingerprint]?.first(where: { $0.equals(page) }) else { return nil }
            match.users += 1
            return match
        }
    }

    /// Up to two references that share a 64-byte block with `page`, each acquired for the caller
    /// (release the ones not used).
    func acquireSimilar(_ hash: BlockHash) -> [ReferencePage] {
        tables.withLock { tables in
            var found: [ReferencePage] = []
            for candidate in [tables.firstBlock[hash.buckets.0], tables.secondBlock[hash.buckets.1]] {
                guard let candidate, !found.contains(where: { $0 === candidate }) else { continue }
                candidate.users += 1
                found.append(candidate)
            }
            return found
        }
    }

    /// Makes a copy of `page` a reference (found by later identical and similar pages), with the
    /// caller as its first user.
    func insert(_ page: UnsafeRawBufferPointer, fingerprint: PageFingerprint) -> ReferencePage {
        let reference = ReferencePage(copying: page, fingerprint: fingerprint)
        let hash = BlockHash(of: page)
        tables.withLock { tables in
            reference.users = 1
            tables.live += 1
            tables.exact[fingerprint, default: []].append(reference)
            tables.firstBlock[hash.buckets.0] = reference
            tables.secondBlock[hash.buckets.1] = reference
        }
        return reference
    }

    /// Ends one use; the last user's release forgets the reference (its bytes go once no decode
    /// in flight holds it).
    func release(_ reference: ReferencePage) {
        tables.withLock { tables in
            reference.users -= 1
            precondition(reference.users >= 0, "reference page released more often than acquired")
            guard reference.users == 0 else { return }
            tables.live -= 1
            tables.exact[reference.fingerprint]?.removeAll { $0 === reference }
            if tables.exact[reference.fingerprint]?.isEmpty == true { tables.exact[reference.fingerprint] = nil }
            let hash = BlockHash(of: UnsafeRawBufferPointer(reference.bytes))
            if tables.firstBlock[hash.buckets.0] === reference { tables.firstBlock[hash.buckets.0] = nil }
            if tables.secondBlock[hash.buckets.1] === reference { tables.secondBlock[hash.buckets.1] = nil }
        }
    }
}
