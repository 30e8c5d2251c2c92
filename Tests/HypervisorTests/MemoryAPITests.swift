import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// Keeps the pages it is given and answers zeros for the rest (what a dedup store or a migration
/// destination does); counts reads per page.
final class KeepingPageSource: PageSource, @unchecked Sendable {
    let pageSize = GuestMemory.pageSize
    let pageCount: Int
    private let kept = Locked<[Int: [UInt8]]>([:])
    private let readCounts = Locked<[Int: Int]>([:])

    init(memorySize: Int) {
        pageCount = memorySize / GuestMemory.pageSize
    }

    func keep(page: Int, bytes: [UInt8]) { kept.withLock { $0[page] = bytes } }
    func reads(of page: Int) -> Int { readCounts.withLock { $0[page] ?? 0 } }

    func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        readCounts.withLock { $0[index, default: 0] += 1 }
        guard let bytes = kept.withLock({ $0[index] }) else { return .zero }
        buffer.copyBytes(from: bytes)
        return .data
    }
}

/// The ticker test guest's region: `mib=2` from 8 MiB (appliances/testguest/guest.c).
let tickerRegionPages = ((8 << 20) / GuestMemory.pageSize)..<((10 << 20) / GuestMemory.pageSize)

func startTicker(backing: MemoryBacking, pageSource: (any PageSource)? = nil) throws -> Machine {
    var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=ticker mib=2")
    configuration.memoryBacking = backing
    configuration.pageSource = pageSource
    let machine = try Machine(configuration: configuration, logger: Logger(label: "test-memory"))
    try machine.start()
    return machine
}

func tickerRounds(_ machine: Machine) -> Int { machine.console.output.components(separatedBy: "ticker round ").count - 1 }

@Suite struct GuestMemoryDiscardTests {
    @Test(arguments: [MemoryBacking.sharedMemfd, .anonymousPrivate])
    func discardedPagesReadAsZerosWithoutAHandler(backing: MemoryBacking) throws {
        let memory = try GuestMemory(size: 16 * GuestMemory.pageSize, backing: backing)
        #expect(memory.backing == backing)
        #expect((memory.fileDescriptor != nil) == (backing == .sharedMemfd))
        for page in 0..<16 { try memory.store(UInt64(page + 1), at: UInt64(page * GuestMemory.pageSize)) }
        try memory.discard(pages: 4..<8)
        for page in 0..<16 {
            #expect(try memory.load(UInt64.self, at: UInt64(page * GuestMemory.pageSize)) == ((4..<8).contains(page) ? 0 : UInt64(page + 1)))
        }
        #expect { try memory.discard(pages: 15..<17) } throws: { "\($0)".contains("outside guest RAM") }
    }

    @Test func onlyAnonymousMemoryIsOfferedToKSM() throws {
        #expect { try GuestMemory(size: 1 << 20, backing: .sharedMemfd).adviseMergeable() } throws: { "\($0)".contains("anonymous") }
        try GuestMemory(size: 1 << 20, backing: .anonymousPrivate).adviseMergeable()
    }
}

@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: memory API tests skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct MemoryAPITests {
    /// KVM's dirty log reports every page of the region the ticker rewrites each round, and nothing
    /// while the machine is paused.
    @Test(arguments: [MemoryBacking.sharedMemfd, .anonymousPrivate])
    func dirtyLogListsThePagesTheGuestWrote(backing: MemoryBacking) throws {
        let machine = try startTicker(backing: backing)
        defer {
            machine.stop(.stopRequested)
            _ = machine.waitUntilStopped(timeout: .seconds(30))
        }
        #expect(waitForConsole(machine, "STREAMVM-READY"), "console: \(machine.console.output)")
        try machine.startDirtyPageTracking()
        #expect(waitForConsole(machine, "ticker round ", count: tickerRounds(machine) + 2))
        try machine.pause()
        let dirty = Set(try machine.dirtyPages())
        #expect(Set(tickerRegionPages).isSubset(of: dirty), "\(Set(tickerRegionPages).subtracting(dirty).count) region pages missing")
        #expect(dirty.count < machine.memory.pageCount / 2, "only what the guest wrote: \(dirty.count) pages")
        #expect(try machine.dirtyPages().isEmpty, "the log was read and cleared, and a paused guest writes nothing")
        try machine.resume()
        #expect(waitForConsole(machine, "ticker round ", count: tickerRounds(machine) + 2))
        try machine.pause()
        #expect(Set(tickerRegionPages).isSubset(of: Set(try machine.dirtyPages())))
        try machine.stopDirtyPageTracking()
        try machine.resume()
        #expect(!machine.console.output.contains("FAIL"))
    }

    /// A booted machine with userfaultfd registered: pages dropped while paused come back from the
    /// page source on their next touch, and the guest finds them exactly as they were.
    @Test(arguments: [MemoryBacking.sharedMemfd, .anonymousPrivate])
    func discardedPagesFaultToTheRegisteredSource(backing: MemoryBacking) throws {
        let source = KeepingPageSource(memorySize: 64 << 20)
        let machine = try startTicker(backing: backing, pageSource: source)
        defer {
            machine.stop(.stopRequested)
            _ = machine.waitUntilStopped(timeout: .seconds(30))
        }
        #expect(waitForConsole(machine, "ticker round ", count: 2), "console: \(machine.console.output)")
        let handler = try #require(machine.pageFaultHandler)
        try machine.pause()
        for page in tickerRegionPages {
            source.keep(page: page, bytes: try machine.memory.read(at: UInt64(page * GuestMemory.pageSize), length: GuestMemory.pageSize))
        }
        let readsBefore = tickerRegionPages.map { source.reads(of: $0) }
        let servedBefore = handler.faultsServed
        let firstTouchesBefore = handler.firstTouchCount
        try machine.discardPages(tickerRegionPages)
        if let memfd = machine.memory.fileDescriptor {
            // The region is a hole in the memfd now: its memory went back to the host. The next
            // data is past it, or there is none (ENXIO).
            let nextData = lseek(memfd, off_t(tickerRegionPages.lowerBound * GuestMemory.pageSize), MemoryImageWriter.seekData)
            #expect(nextData == -1 || nextData >= off_t(tickerRegionPages.upperBound * GuestMemory.pageSize))
        }
        try machine.resume()
        machine.serial.enqueueInput(RestorePlan.resumedLine)
        #expect(waitForConsole(machine, "memory intact"), "console: \(machine.console.output)")
        #expect(waitForConsole(machine, "ticker round ", count: tickerRounds(machine) + 1))
        #expect(!machine.console.output.contains("FAIL"))
        #expect(!machine.console.output.contains("DAMAGED"))
        for (page, before) in zip(tickerRegionPages, readsBefore) {
            #expect(source.reads(of: page) == before + 1, "page \(page) was read \(source.reads(of: page) - before) times after the discard")
        }
        #expect(handler.faultsServed >= servedBefore + tickerRegionPages.count)
        #expect(handler.firstTouchCount == firstTouchesBefore, "refetched pages are not first touches")
        #expect(machine.metrics().pageFaultsServed == handler.faultsServed)
    }

    /// Anonymous private memory snapshots mid-run (every page read, no SEEK_DATA) and restores into
    /// anonymous memory lazily.
    @Test func anonymousMemorySnapshotsAndRestores() throws {
        let scratch = try ScratchDirectory()
        let machine = try startTicker(backing: .anonymousPrivate)
        #expect(waitForConsole(machine, "ticker round ", count: 2), "console: \(machine.console.output)")
        try machine.pause()
        try machine.saveSnapshot(to: scratch.path)
        machine.stop(.stopRequested)
        _ = machine.waitUntilStopped(timeout: .seconds(30))
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: try RestorePlan.load(directory: scratch.path))
        configuration.memoryBacking = .anonymousPrivate
        let restored = try Machine(configuration: configuration, logger: Logger(label: "test-memory-restore"))
        try restored.start()
        #expect(waitForConsole(restored, "memory intact"), "console: \(restored.console.output)")
        restored.stop(.stopRequested)
        _ = restored.waitUntilStopped(timeout: .seconds(30))
    }
}
