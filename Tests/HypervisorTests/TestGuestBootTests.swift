import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// Builds appliances/testguest once per test process with its build script (system gcc/binutils).
enum TestGuest {
    static let repositoryRoot = TestGuestBuild.repositoryRoot

    static let image: Result<[UInt8], any Error> = Result {
        let output = try TestGuestBuild.build(into: "testguest")
        return Array(try Data(contentsOf: URL(fileURLWithPath: output + "/testguest.bin")))
    }
}

/// Boots the flat test guest in `mode` and returns how the run ended and what the console said.
func bootTestGuest(_ mode: String, memoryMiB: Int = 64, vcpus: Int = 1, disks: [any BlockBackend] = [],
                   timeout: Duration = .seconds(90), eventFDs: Bool = true) throws -> (reason: StopReason, console: String, machine: Machine) {
    var configuration = MachineConfiguration(memorySize: memoryMiB << 20, vcpuCount: vcpus, image: .flat(try TestGuest.image.get()),
                                             commandLine: "mode=\(mode)", disks: disks)
    configuration.useEventFDs = eventFDs
    let machine = try Machine(configuration: configuration, logger: Logger(label: "test-\(mode)"))
    let reason = machine.run(timeout: timeout)
    return (reason, machine.console.output, machine)
}

@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: guest boot tests skipped"),
       .timeLimit(.minutes(3)), .offCooperativePool)
struct TestGuestBootTests {
    @Test func helloGuestPrintsReadyAndPowersOff() throws {
        let (reason, console, machine) = try bootTestGuest("hello")
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(console.contains("STREAMVM-READY"))
        #expect(machine.console.isReady)
        let timing = machine.timing
        #expect(timing.firstExit != nil && timing.ready != nil)
    }

    @Test func memoryPatternsSurviveAcrossGuestRAM() throws {
        let (reason, console, _) = try bootTestGuest("memory", memoryMiB: 64)
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(console.contains("ok   memory pattern"))
    }

    /// Both ways a queue notification can reach the device: an ioeventfd served on an I/O thread
    /// (with an irqfd for the interrupt), and a KVM_EXIT_MMIO served on the vCPU thread.
    @Test(arguments: [true, false])
    func virtioBlockReadsAndWritesAFile(eventFDs: Bool) throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("disk.img")
        try Data(patternedDisk(sectors: 64)).write(to: URL(fileURLWithPath: path))
        let (reason, console, machine) = try bootTestGuest("blk", disks: [try RawFileBackend(path: path, readOnly: false)], eventFDs: eventFDs)
        #expect(machine.doorbells.isEmpty != (eventFDs && machine.virtualMachine.supportsEventFDs))
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(!console.contains("FAIL"))
        let disk = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        for sector in 10...11 {
            let expected = (0..<512).map { UInt8(truncatingIfNeeded: 0xa5 ^ (sector + $0)) }
            #expect(Array(disk[(sector * 512)..<((sector + 1) * 512)]) == expected)
        }
        #expect(Array(disk[0..<(10 * 512)]) == Array(patternedDisk(sectors: 10)))
    }

    @Test func virtioBlockWritesGoToTheOverlayNotTheBase() throws {
        let scratch = try ScratchDirectory()
        let basePath = scratch.file("base.img")
        let original = patternedDisk(sectors: 64)
        try Data(original).write(to: URL(fileURLWithPath: basePath))
        let overlay = try CopyOnWriteOverlay(base: try RawFileBackend(path: basePath, readOnly: true), overlayPath: scratch.file("overlay.img"))
        let (reason, console, _) = try bootTestGuest("blk", disks: [overlay])
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: basePath))) == original)
        var sector = [UInt8](repeating: 0, count: 512)
        try sector.withUnsafeMutableBytes { try overlay.read(at: 10 * 512, into: $0) }
        #expect(sector == (0..<512).map { UInt8(truncatingIfNeeded: 0xa5 ^ (10 + $0)) })
    }

    @Test(arguments: [true, false])
    func hostileDescriptorChainsGetErrorsOrResetNeverACrash(eventFDs: Bool) throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("disk.img")
        try Data(patternedDisk(sectors: 64)).write(to: URL(fileURLWithPath: path))
        let (reason, console, _) = try bootTestGuest("hostile", memoryMiB: 128, disks: [try RawFileBackend(path: path, readOnly: false)],
                                                     eventFDs: eventFDs)
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(!console.contains("FAIL"))
        #expect(console.contains("descriptor loop"))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: path))) == patternedDisk(sectors: 64))
    }

    @Test func acpiSleepControlPowersOff() throws {
        let (reason, console, _) = try bootTestGuest("acpi")
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(console.contains("acpi: writing SLP_EN"))
        #expect(!console.contains("FAIL"))
    }

    @Test func i8042ResetEndsTheRunAsReboot() throws {
        let (reason, console, _) = try bootTestGuest("reset")
        #expect(reason == .reboot, "console: \(console)")
    }

    @Test func tripleFaultEndsTheRun() throws {
        let (reason, console, _) = try bootTestGuest("triple")
        #expect(reason == .tripleFault, "console: \(console)")
    }

    @Test func breakpointsReachTheGuestHandler() throws {
        let (reason, console, _) = try bootTestGuest("int3")
        #expect(reason == .powerOff(code: 0), "console: \(console)")
    }

    @Test func secondVCPUWaitsForStartupAndTheRunStillEnds() throws {
        let (reason, console, _) = try bootTestGuest("hello", vcpus: 2)
        #expect(reason == .powerOff(code: 0), "console: \(console)")
    }

    @Test func spinningGuestIsStoppedByTheTimeLimit() throws {
        let (reason, console, machine) = try bootTestGuest("spin", vcpus: 2, timeout: .seconds(3))
        #expect(reason == .timedOut, "console: \(console)")
        #expect(machine.console.isReady)
    }

    @Test func hostStopEndsARunningGuest() throws {
        let configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=spin")
        let machine = try Machine(configuration: configuration, logger: Logger(label: "test-stop"))
        Thread.detachNewThread {
            while !machine.console.isReady { usleep(10_000) }
            machine.stop(.stopRequested)
        }
        #expect(machine.run(timeout: .seconds(90)) == .stopRequested)
    }
}
