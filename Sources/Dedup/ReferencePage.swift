import Glibc

/// A copy of one page's bytes held by the engine: the one frame that identical pages of any
/// machine share, and the base that patches of similar pages are decoded against.
///
/// Its lifetime is its users' (dropped pages stored as `.shared` or `.patched` against it), counted
/// explicitly under the engine's index lock so the index can forget it when the last one goes;
/// Swift's reference counting keeps the bytes alive for a decode already in flight. A reference is
/// never itself patched or compressed, and it outlives the machine it came from while another
/// machine's patches need it.
final class ReferencePage: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
    let fingerprint: PageFingerprint
    /// Stored pages that use it; changed only under `ReferenceIndex`'s lock.
    var users = 0

    init(copying page: UnsafeRawBufferPointer, fingerprint: PageFingerprint) {
        bytes = .allocate(byteCount: page.count, alignment: 64)
        bytes.copyMemory(from: page)
        self.fingerprint = fingerprint
    }

    deinit { bytes.deallocate() }

    func equals(_ page: UnsafeRawBufferPointer) -> Bool {
        page.count == bytes.count && memcmp(page.baseAddress!, bytes.baseAddress!, page.count) == 0
    }
}
