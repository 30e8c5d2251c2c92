import Foundation
import Glibc
import TestSupport
import Testing
@testable import Hypervisor

/// A page source that counts reads per page and can be slowed down or made to fail, wrapped around
/// a real in-memory image.
final class CountingPageSource: PageSource, @unchecked Sendable {
    let inner: InMemoryPageSource
    let delayMicroseconds: UInt32
    let failingPage: Int?
    /// Pages per fault-around unit (1: none).
    let unit: Int
    private let counts: Locked<[Int: Int]> = Locked([:])

    init(image: [UInt8], delayMicroseconds: UInt32 = 0, failingPage: Int? = nil, unit: Int = 1) throws {
        inner = try InMemoryPageSource(image: image)
        self.unit = unit
        self.delayMicroseconds = delayMicroseconds
        self.failingPage = failingPage
    }

    var pageSize: Int { inner.pageSize }
    var pageCount: Int { inner.pageCount }
    func reads(of page: Int) -> Int { counts.withLock { $0[page] ?? 0 } }

    func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        counts.withLock { $0[index, default: 0] += 1 }
        if delayMicroseconds > 0 { usleep(delayMicroseconds) }
        if index == failingPage { throw PageSourceError(page: index, problem: "injected I/O error") }
        return try inner.readPage(index, into: buffer)
    }

    func faultAroundPages(of index: Int) -> Range<Int> {
        let first = index / unit * unit
        return first..<min(first + unit, pageCount)
    }
}

/// Guest-RAM-sized image where every third page is zero and the others hold bytes derived from
/// their page number and offset.
func patternedMemoryImage(pages: Int) -> [UInt8] {
    let pageSize = GuestMemory.pageSize
    var image = [UInt8](repeating: 0, count: pages * pageSize)
    for page in 0..<pages where page % 3 != 0 {
        for offset in stride(from: 0, to: pageSize, by: 8) {
            var value = UInt64(page) &* 0x9e37_79b9_7f4a_7c15 &+ UInt64(offset)
            withUnsafeBytes(of: &value) { image.replaceSubrange((page * pageSize + offset)..<(page * pageSize + offset + 8), with: $0) }
        }
    }
    return image
}

/// Memory and handlers a test deliberately keeps forever: a thread blocked on a page that will
/// never be served must not see the memory unmapped under it.
nonisolated(unsafe) var keptAlive: [AnyObject] = []

@Suite(.enabled(if: PageFaultHandler.isAvailable, "userfaultfd is not available to this process: lazy-memory tests skipped"),
       .timeLimit(.minutes(2)), .offCooperativePool)
struct PageFaultHandlerTests {
    static let pages = 64

    /// Reads `pages` of guest memory in that order (each read may fault) and checks them against `image`.
    static func expectPages(_ pages: [Int], of memory: GuestMemory, toBe image: [UInt8]) throws {
        let size = GuestMemory.pageSize
        for page in pages {
            let bytes = try memory.read(at: UInt64(page * size), length: size)
            #expect(bytes[...] == image[(page * size)..<((page + 1) * size)], "page \(page)")
        }
    }

    @Test func everyPageReadThroughTheHandlerHasTheSourceBytesAndIsLoggedOnce() throws {
        let image = patternedMemoryImage(pages: Self.pages)
        let memory = try GuestMemory(size: image.count)
        let source = try CountingPageSource(image: image)
        let handler = try PageFaultHandler(memory: memory, source: source, onError: { _ in })
        handler.start()
        defer { handler.stop() }
        // Touch in a scrambled order, twice: the second pass must not fault again.
        let order = (0..<Self.pages).map { ($0 * 37) % Self.pages }
        for _ in 0..<2 {
            try Self.expectPages(order, of: memory, toBe: image)
        }
        let log = handler.faultLog
        #expect(log.map(\.page) == order)
        #expect(Set(log.map(\.page)).count == log.count)
        #expect(zip(log, log.dropFirst()).allSatisfy { $0.nanoseconds <= $1.nanoseconds })
        #expect(handler.presentPageCount == Self.pages)
        #expect((0..<Self.pages).allSatisfy { source.reads(of: $0) == 1 })
    }

    @Test func threadsRacingOnOnePageAllSeeItAndTheSourceIsReadOnce() throws {
        let image = patternedMemoryImage(pages: Self.pages)
        let memory = try GuestMemory(size: image.count)
        let source = try CountingPageSource(image: image, delayMicroseconds: 50_000)
        let handler = try PageFaultHandler(memory: memory, source: source, fetchThreads: 3, onError: { _ in })
        handler.start()
        defer { handler.stop() }
        let racedPage = 7
        let seen = Locked<[[UInt8]]>([])
        let group = DispatchGroup()
        for racer in 0..<6 {
            group.enter()
            Thread.detachNewThread {
                // Half the racers touch the page's last word, half its first: the same page either way.
                let offset = racer % 2 == 0 ? 0 : GuestMemory.pageSize - 8
                _ = try? memory.load(UInt64.self, at: UInt64(racedPage * GuestMemory.pageSize + offset))
                seen.withLock { $0.append((try? memory.read(at: UInt64(racedPage * GuestMemory.pageSize), length: GuestMemory.pageSize)) ?? []) }
                group.leave()
            }
        }
        // Meanwhile another page is served to this thread: its wait does not depend on the raced page.
        let other = try memory.read(at: UInt64(20 * GuestMemory.pageSize), length: 16)
        #expect(other[...] == image[(20 * GuestMemory.pageSize)..<(20 * GuestMemory.pageSize + 16)])
        #expect(group.wait(timeout: .now() + 30) == .success)
        let expected = Array(image[(racedPage * GuestMemory.pageSize)..<((racedPage + 1) * GuestMemory.pageSize)])
        #expect(seen.withLock { $0 }.count == 6)
        #expect(seen.withLock { $0 }.allSatisfy { $0 == expected })
        #expect(source.reads(of: racedPage) == 1)
        #expect(handler.faultLog.filter { $0.page == racedPage }.count == 1)
    }

    @Test func aSourceErrorIsReportedAndTheFaultingThreadNeverSeesAPage() throws {
        let image = patternedMemoryImage(pages: Self.pages)
        let memory = try GuestMemory(size: image.count)
        let source = try CountingPageSource(image: image, failingPage: 5)
        let reported = Locked<PageSourceError?>(nil)
        // Without revocation the faulting thread must simply never get a page (with it, a host thread
        // would take SIGSEGV: revocation is for stopped VMs, tested in SnapshotRestoreTests).
        let handler = try PageFaultHandler(memory: memory, source: source, revokeOnError: false,
                                           onError: { error in reported.withLock { $0 = error } })
        keptAlive += [memory, handler, source]
        handler.start()
        let returned = Locked(false)
        Thread.detachNewThread {
            _ = try? memory.load(UInt8.self, at: UInt64(5 * GuestMemory.pageSize + 100))
            returned.withLock { $0 = true }
        }
        var waited = 0
        while reported.withLock({ $0 }) == nil, waited < 3000 { usleep(1000); waited += 1 }
        let error = try #require(reported.withLock { $0 })
        #expect(error.page == 5)
        #expect(error.description.contains("injected I/O error"))
        #expect(handler.failure == error)
        usleep(100_000)
        #expect(returned.withLock { $0 } == false, "the thread must still be waiting: no page was mapped for it")
        #expect(handler.presentPageCount == 0)
    }

    @Test(arguments: [0, 4])
    func aFaultInstallsTheWholeUnitItsSourceDeliversWithThePage(fetchThreads: Int) throws {
        let unit = 8
        let image = patternedMemoryImage(pages: Self.pages)
        let memory = try GuestMemory(size: image.count)
        let source = try CountingPageSource(image: image, unit: unit)
        let handler = try PageFaultHandler(memory: memory, source: source, fetchThreads: fetchThreads, onError: { _ in })
        handler.start()
        defer { handler.stop() }
        let order = (0..<Self.pages).map { ($0 * 37) % Self.pages }
        try Self.expectPages(order, of: memory, toBe: image)
        // A fault on a data page brings its whole unit; a zero page (every third) brings only itself.
        var present = Set<Int>()
        var expectedFaults: [Int] = []
        for page in order where !present.contains(page) {
            expectedFaults.append(page)
            present.insert(page)
            if page % 3 != 0 { present.formUnion((page / unit * unit)..<min(page / unit * unit + unit, Self.pages)) }
        }
        #expect(handler.faultLog.map(\.page).sorted() == expectedFaults.sorted())
        #expect(expectedFaults.count < Self.pages / 2)
        #expect((0..<Self.pages).allSatisfy { source.reads(of: $0) == 1 })
    }

    @Test func populateAllMapsEveryPageWithoutFaults() throws {
        let image = patternedMemoryImage(pages: Self.pages)
        let memory = try GuestMemory(size: image.count)
        let source = try CountingPageSource(image: image)
        let handler = try PageFaultHandler(memory: memory, source: source, onError: { _ in })
        handler.start()
        defer { handler.stop() }
        try handler.populateAll()
        #expect(handler.presentPageCount == Self.pages)
        #expect(try memory.read(at: 0, length: image.count) == image)
        #expect(handler.faultLog.isEmpty)
    }

    @Test func populatingAWorkingSetMapsOnlyThosePagesOnceAndTheRestStillFaultIn() throws {
        let image = patternedMemoryImage(pages: Self.pages)
        let memory = try GuestMemory(size: image.count)
        let source = try CountingPageSource(image: image)
        let handler = try PageFaultHandler(memory: memory, source: source, onError: { _ in })
        handler.start()
        defer { handler.stop() }
        let workingSet = [5, 1, 5, 9, Self.pages + 3, -1]   // a repeat and two out of range
        try handler.populate(pages: workingSet)
        #expect(handler.presentPageCount == 3)
        #expect(handler.faultLog.isEmpty, "prefetched pages are not first touches")
        // Everything reads back right: the working set from memory, the rest through faults.
        #expect(try memory.read(at: 0, length: image.count) == image)
        // (presentPageCount may lag the last wake-up by a moment; the log is written when a fault is read.)
        #expect(Set(handler.faultLog.map(\.page)) == Set(0..<Self.pages).subtracting([1, 5, 9]))
        #expect(source.reads(of: 5) == 1)
    }

    @Test func pageDigestIsZeroOnlyForZeroPagesAndSeesAOneBitChange() {
        var page = [UInt8](repeating: 0, count: 4096)
        #expect(page.withUnsafeBytes { PageDigest.digest($0) } == 0)
        page[4095] = 1
        let one = page.withUnsafeBytes { PageDigest.digest($0) }
        page[4095] = 0
        page[0] = 1
        let other = page.withUnsafeBytes { PageDigest.digest($0) }
        #expect(one != 0 && other != 0 && one != other)
    }
}
