import Glibc

/// Finds pages with identical contents within and across memory spaces: the first step of the
/// Difference Engine (Gupta et al., OSDI 2008), which shares such pages copy-on-write before it
/// patches similar ones or compresses cold ones.
///
/// Candidates come from a fingerprint table; each candidate is confirmed with a full byte compare
/// against the representative page of its fingerprint, so the counts are exact.
public struct IdenticalPageScanner: Sendable {
    /// x86-64 base page size, the granularity at which a hypervisor can share guest memory.
    public static let defaultPageSize = 4096

    public let pageSize: Int

    public init(pageSize: Int = defaultPageSize) {
        precondition(pageSize > 0 && pageSize % 8 == 0, "page size must be a positive multiple of 8")
        self.pageSize = pageSize
    }

    /// A page located by space index and page index inside it.
    public struct PageLocation: Hashable, Sendable {
        public let space: Int
        public let page: Int

        public init(space: Int, page: Int) {
            self.space = space
            self.page = page
        }
    }

    /// Scans every page of every space once.
    /// - Returns: the sharing counts, and for each duplicate page the location of the page it equals.
    public func scan(_ spaces: [MemorySpace]) throws -> (report: SharingReport, duplicates: [PageLocation: PageLocation]) {
        for space in spaces where space.bytes.count % pageSize != 0 {
            throw DedupError.unalignedSpace(name: space.name, length: space.bytes.count, pageSize: pageSize)
        }
        var report = SharingReport(pageSize: pageSize, pages: 0, zeroPages: 0, distinctPages: 0,
                                   duplicatePages: 0, fingerprintCollisions: 0)
        // Representatives per fingerprint; usually one, more only after a collision.
        var representatives: [PageFingerprint: [PageLocation]] = [:]
        var duplicates: [PageLocation: PageLocation] = [:]

        for (spaceIndex, space) in spaces.enumerated() {
            let pageCount = space.bytes.count / pageSize
            for pageIndex in 0..<pageCount {
                let page = UnsafeRawBufferPointer(rebasing: space.bytes[(pageIndex * pageSize)..<((pageIndex + 1) * pageSize)])
                report.pages += 1
                if isZero(page) {
                    report.zeroPages += 1
                    continue
                }
                let location = PageLocation(space: spaceIndex, page: pageIndex)
                let fingerprint = PageFingerprint(of: page)
                let candidates = representatives[fingerprint, default: []]
                if let match = candidates.first(where: { equal(page, self.page(at: $0, in: spaces)) }) {
                    report.duplicatePages += 1
                    duplicates[location] = match
                } else {
                    if !candidates.isEmpty { report.fingerprintCollisions += 1 }
                    report.distinctPages += 1
                    representatives[fingerprint, default: []].append(location)
                }
            }
        }
        return (report, duplicates)
    }

    private func page(at location: PageLocation, in spaces: [MemorySpace]) -> UnsafeRawBufferPointer {
        let start = location.page * pageSize
        return UnsafeRawBufferPointer(rebasing: spaces[location.space].bytes[start..<(start + pageSize)])
    }

    private func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        memcmp(a.baseAddress!, b.baseAddress!, pageSize) == 0
    }

    private func isZero(_ page: UnsafeRawBufferPointer) -> Bool {
        let words = pageSize / 8
        for index in 0..<words where page.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 {
            return false
        }
        return true
    }
}
