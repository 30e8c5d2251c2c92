import Dedup
import Hypervisor
import Testing

@Suite struct IdenticalPageScannerTests {
    private let pageSize = IdenticalPageScanner.defaultPageSize

    /// Fills page `index` of `bytes` with a pattern derived from `seed`.
    private func fill(_ bytes: UnsafeMutableRawBufferPointer, page index: Int, seed: UInt8) {
        for offset in 0..<pageSize { bytes[index * pageSize + offset] = seed &+ UInt8(truncatingIfNeeded: offset * 31) }
    }

    @Test func countsZeroDistinctAndDuplicatePagesAcrossSpaces() throws {
        let first = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 * pageSize, alignment: 4096)
        let second = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * pageSize, alignment: 4096)
        defer { first.deallocate(); second.deallocate() }
        first.initializeMemory(as: UInt8.self, repeating: 0)
        second.initializeMemory(as: UInt8.self, repeating: 0)
        // first: pages 0,1 = A; 2 = B; 3 = C; 4..7 zero.  second: 0 = A, 1 = B, 2 = D, 3 zero.
        fill(first, page: 0, seed: 1); fill(first, page: 1, seed: 1)
        fill(first, page: 2, seed: 2); fill(first, page: 3, seed: 3)
        fill(second, page: 0, seed: 1); fill(second, page: 1, seed: 2); fill(second, page: 2, seed: 4)

        let scanner = IdenticalPageScanner()
        let (report, duplicates) = try scanner.scan([
            MemorySpace(name: "vm1", bytes: UnsafeRawBufferPointer(first)),
            MemorySpace(name: "vm2", bytes: UnsafeRawBufferPointer(second)),
        ])
        #expect(report.pages == 12)
        #expect(report.zeroPages == 5)
        #expect(report.distinctPages == 4) // A, B, C, D
        #expect(report.duplicatePages == 3) // first[1], second[0], second[1]
        #expect(report.bytesSaved == 8 * pageSize)
        #expect(duplicates[.init(space: 1, page: 1)] == .init(space: 0, page: 2))
        #expect(duplicates[.init(space: 0, page: 1)] == .init(space: 0, page: 0))
    }

    @Test func pagesDifferingInOneByteAreNotShared() throws {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * pageSize, alignment: 4096)
        defer { bytes.deallocate() }
        fill(bytes, page: 0, seed: 9)
        fill(bytes, page: 1, seed: 9)
        bytes[2 * pageSize - 1] ^= 0x80
        let (report, duplicates) = try IdenticalPageScanner().scan([MemorySpace(name: "vm", bytes: UnsafeRawBufferPointer(bytes))])
        #expect(report.distinctPages == 2)
        #expect(report.duplicatePages == 0)
        #expect(duplicates.isEmpty)
    }

    @Test func unalignedSpaceIsRefused() {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize + 1, alignment: 4096)
        defer { bytes.deallocate() }
        #expect(throws: DedupError.unalignedSpace(name: "odd", length: pageSize + 1, pageSize: pageSize)) {
            try IdenticalPageScanner().scan([MemorySpace(name: "odd", bytes: UnsafeRawBufferPointer(bytes))])
        }
    }

    @Test func scansGuestMemoryRegions() throws {
        let memory = try GuestMemory(size: 1 << 20)
        let pattern = (0..<pageSize).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try memory.write(pattern, at: 0x1000)
        try memory.write(pattern, at: 0x8000)
        let (report, _) = try IdenticalPageScanner().scan(MemorySpace.regions(of: memory, name: "guest"))
        #expect(report.pages == (1 << 20) / pageSize)
        #expect(report.duplicatePages == 1)
        #expect(report.distinctPages == 1)
    }
}
