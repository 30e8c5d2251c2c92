import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// The VMM's own memory: the machine keeps no boot image, smaps is read correctly, and releasing
/// the startup pages leaves a running machine working (it runs, pauses, snapshots and restores).
struct ProcessMemoryMapTests {
    static let sample = """
        55d0c0a00000-55d0c0c00000 r-xp 00000000 fd:01 1234                       /usr/local/bin/streamvm
        Size:               2048 kB
        Rss:                1536 kB
        Anonymous:             0 kB
        Private_Dirty:         0 kB
        Shared_Dirty:          0 kB
        VmFlags: rd ex mr mw me dw
        55d0c0c00000-55d0c0c40000 r--p 00200000 fd:01 1234                       /usr/local/bin/streamvm
        Rss:                 256 kB
        Anonymous:            64 kB
        Private_Dirty:        64 kB
        55d0c0c40000-55d0c0c50000 rw-p 00240000 fd:01 1234                       /usr/local/bin/streamvm
        Rss:                  64 kB
        Anonymous:             0 kB
        55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0                          [heap]
        Rss:                 900 kB
        Anonymous:           900 kB
        7f0000000000-7f0010000000 rw-s 00000000 00:01 77                         /memfd:streamvm-guest-ram (deleted)
        Rss:                 128 kB
        Shared_Dirty:        128 kB
        7f0010000000-7f0010021000 rw-p 00000000 00:00 0 
        Rss:                  12 kB
        Anonymous:            12 kB
        7f0020000000-7f0020100000 r-xp 00000000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
        Rss:                 700 kB
        Anonymous:             0 kB
        """

    @Test func smapsMappingsAndTheirPagesAreRead() throws {
        let map = try ProcessMemoryMap.parse(Self.sample)
        #expect(map.mappings.count == 7)
        #expect(map.mappings[0] == ProcessMemoryMap.Mapping(start: 0x55d0_c0a0_0000, end: 0x55d0_c0c0_0000, permissions: "r-xp",
                                                            path: "/usr/local/bin/streamvm", resident: 1536 << 10))
        #expect(map.mappings[4].path == "/memfd:streamvm-guest-ram (deleted)")
        #expect(map.mappings[5].path == "")
        #expect(map.resident == (1536 + 256 + 64 + 900 + 128 + 12 + 700) << 10)
    }

    /// Only read-only private mappings of files holding no copied or dirty page may be dropped:
    /// not RELRO with relocated pages, not .data, not the heap, never guest RAM.
    @Test func onlyCleanReadOnlyFileMappingsAreReleaseCandidates() throws {
        let candidates = try ProcessMemoryMap.parse(Self.sample).mappings.map(\.isCleanFileMapping)
        #expect(candidates == [true, false, false, false, false, false, true])
    }

    @Test func aLineThatIsNotSmapsIsRefusedWithTheSourceNamed() {
        #expect { try ProcessMemoryMap.parse("zzzz-55d0 r-xp\n", source: "/proc/1/smaps") } throws: { "\($0)".contains("/proc/1/smaps") }
    }
}

@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: footprint tests skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct VMMFootprintTests {
    /// The kernel bytes are copied into guest RAM and not kept by the machine.
    @Test func theMachineKeepsNoBootImage() throws {
        let machine = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=hello"),
                                  logger: Logger(label: "test-footprint"))
        #expect(machine.configuration.image == nil)
        #expect(machine.run(timeout: .seconds(60)) == .powerOff(code: 0), "console: \(machine.console.output)")
        #expect(machine.configuration.image == nil)
    }

    @Test func aBootWithoutImageOrSnapshotIsRefused() {
        #expect { _ = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: nil), logger: Logger(label: "test")) } throws: {
            "\($0)".contains("a boot image is needed")
        }
    }

    /// Releasing this (test) process's startup pages while a ticker guest runs: guest RAM keeps
    /// every resident page, the guest goes on, and a snapshot taken afterwards restores intact.
    @Test func releasingStartupPagesKeepsTheMachineWorking() throws {
        let scratch = try ScratchDirectory()
        let machine = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=ticker mib=2"),
                                  logger: Logger(label: "test-footprint-ticker"))
        try machine.start()
        #expect(waitForConsole(machine, "ticker round ", count: 2), "console: \(machine.console.output)")
        try machine.pause()
        let guestStart = UInt(bitPattern: machine.memory.regions[0].host)
        func guestResident() throws -> Int? { try ProcessMemoryMap.read().mappings.first { $0.start == guestStart }?.resident }
        let before = try guestResident()
        // The executable only: libraries could be dlopen'ed by other tests running in this process.
        let summary = try StartupPageRelease.release(includingLibraries: false)
        #expect(try guestResident() == before, "guest RAM lost resident pages")
        #expect(before ?? 0 > 0)
        #expect(summary.mappingsReleased > 0 && summary.fileBytesReleased > 0, "\(summary)")

        let rounds = machine.console.output.components(separatedBy: "ticker round ").count - 1
        try machine.resume()
        #expect(waitForConsole(machine, "ticker round ", count: rounds + 2), "the guest did not go on: \(machine.console.output)")
        try machine.pause()
        try machine.saveSnapshot(to: scratch.path)
        machine.stop(.stopRequested)
        #expect(machine.waitUntilStopped(timeout: .seconds(30)) == .stopRequested)
        #expect(!machine.console.output.contains("FAIL"))

        let restored = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: nil, restore: try RestorePlan.load(directory: scratch.path)),
                                   logger: Logger(label: "test-footprint-restore"))
        try restored.start()
        #expect(waitForConsole(restored, "memory intact"), "console: \(restored.console.output)")
        restored.stop(.stopRequested)
        #expect(restored.waitUntilStopped(timeout: .seconds(30)) == .stopRequested)
        #expect(!restored.console.output.contains("DAMAGED"))
    }
}
