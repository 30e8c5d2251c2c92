import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// Polls the console until `text` has appeared `count` times or `limit` passes.
func waitForConsole(_ machine: Machine, _ text: String, count: Int = 1, limit: Duration = .seconds(90)) -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if machine.console.output.components(separatedBy: text).count - 1 >= count { return true }
        if machine.state == .stopped { return machine.console.output.components(separatedBy: text).count - 1 >= count }
        usleep(10_000)
    }
    return false
}

/// The `smp result:` line's values, parsed from the console.
struct SMPResult: Equatable {
    var cpus: UInt64
    var rounds: UInt64
    var counter: UInt64
    var errors: UInt64

    init(cpus: UInt64, rounds: UInt64, counter: UInt64, errors: UInt64) {
        self.cpus = cpus
        self.rounds = rounds
        self.counter = counter
        self.errors = errors
    }

    init?(console: String) {
        // The guest ends lines with "\r\n", one Character in Swift: cut the line at scalar level.
        guard let start = console.range(of: "smp result:") else { return nil }
        let line = String(String.UnicodeScalarView(console[start.upperBound...].unicodeScalars.prefix { $0 != "\n" && $0 != "\r" }))
        let words = line.split(separator: " ")
        func value(after key: String) -> UInt64? {
            guard let index = words.firstIndex(where: { $0 == key }), index + 1 < words.count else { return nil }
            return UInt64(words[index + 1].dropFirst(2), radix: 16)
        }
        guard let cpus = value(after: "cpus"), let rounds = value(after: "rounds"), let counter = value(after: "counter"),
              let errors = value(after: "errors") else { return nil }
        self.cpus = cpus
        self.rounds = rounds
        self.counter = counter
        self.errors = errors
    }
}

/// The guest's shared round counter and round count (`struct smp_shared` at 0x30000 in
/// appliances/testguest/guest.c: `counter` at offset 0, `rounds` at 64).
let smpCounterAddress: UInt64 = 0x30000
let smpRoundsAddress: UInt64 = 0x30040

@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: lifecycle tests skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct LifecycleTests {
    /// Every AP is started by the guest itself (INIT-SIPI-SIPI, real-mode trampoline), and every CPU
    /// does its share: the counter is cpus × rounds only if each vCPU ran each round.
    @Test(arguments: [2, 4])
    func everyVCPUStartsAndDoesItsWork(vcpus: Int) throws {
        let (reason, console, machine) = try bootTestGuest("smp rounds=20", vcpus: vcpus, timeout: .seconds(240))
        #expect(reason == .powerOff(code: 0), "console: \(console)\n\(machine.describeVCPUs())")
        let result = try #require(SMPResult(console: console), "no smp result line: \(console)")
        #expect(result == SMPResult(cpus: UInt64(vcpus), rounds: 20, counter: UInt64(vcpus) * 20, errors: 0))
        let metrics = machine.metrics()
        #expect(metrics.vcpuCount == vcpus)
        #expect(metrics.state == .stopped)
        #expect(metrics.exits[.portOut, default: 0] > 0)
        #expect(metrics.exits.count == VCPUExitKind.allCases.count)
    }

    /// Pauses and resumes a four-vCPU guest under load many times: while paused nothing moves (the
    /// guest's counter and the exit counts stand still), and the guest's result is still exact. The
    /// guest is given more rounds than it can do; after the last pause the test lowers its round
    /// count (in guest memory, while paused) so the run ends however fast the host is.
    @Test func pauseAndResumeUnderLoadKeepTheGuestCorrect() throws {
        let cpus: UInt64 = 4
        let machine = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, vcpuCount: Int(cpus), image: .flat(try TestGuest.image.get()),
                                                                      commandLine: "mode=smp rounds=100000000 kib=32"),
                                  logger: Logger(label: "test-pause"))
        try machine.start()
        #expect(waitForConsole(machine, "application processors started"), "console: \(machine.console.output)")
        var lastCounter: UInt64 = 0
        for pause in 0..<30 {
            // Pause only once the guest has gone on since the last pause: every pause lands in
            // running work, on a host of any speed.
            let deadline = ContinuousClock.now + .seconds(60)
            while try machine.memory.load(UInt64.self, at: smpCounterAddress) <= lastCounter, ContinuousClock.now < deadline { usleep(2_000) }
            try machine.pause()
            #expect(machine.state == .paused)
            let counter = try machine.memory.load(UInt64.self, at: smpCounterAddress)
            let exits = machine.metrics().exits
            usleep(5_000)
            #expect(try machine.memory.load(UInt64.self, at: smpCounterAddress) == counter, "the guest ran while paused")
            #expect(machine.metrics().exits == exits, "a vCPU left the guest while paused")
            #expect(counter > lastCounter, "pause \(pause): the guest made no progress since the last one")
            lastCounter = counter
            #expect(throws: HypervisorError.self) { try machine.pause() }
            try machine.resume()
        }
        try machine.pause()
        // Every CPU is within one round of counter / cpus (they meet at a barrier each round).
        let rounds = try machine.memory.load(UInt64.self, at: smpCounterAddress) / cpus + 2
        try machine.memory.store(rounds, at: smpRoundsAddress)
        try machine.resume()
        let reason = machine.waitUntilStopped(timeout: .seconds(240))
        #expect(reason == .powerOff(code: 0), "console: \(machine.console.output)")
        let result = try #require(SMPResult(console: machine.console.output))
        #expect(result == SMPResult(cpus: cpus, rounds: rounds, counter: cpus * rounds, errors: 0))
    }

    @Test func requestsInTheWrongStateAreRefusedAndStopWorksWhilePaused() throws {
        let scratch = try ScratchDirectory()
        let machine = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, vcpuCount: 2, image: .flat(try TestGuest.image.get()),
                                                                      commandLine: "mode=spin"),
                                  logger: Logger(label: "test-states"))
        #expect(machine.state == .notStarted)
        #expect(throws: HypervisorError.self) { try machine.pause() }
        #expect(throws: HypervisorError.self) { try machine.resume() }
        try machine.start()
        #expect(throws: HypervisorError.self) { try machine.start() }
        #expect(machine.state == .running)
        #expect(waitForConsole(machine, "STREAMVM-READY"))
        #expect(throws: HypervisorError.self) { try machine.resume() }
        #expect { try machine.saveSnapshot(to: scratch.path) } throws: { "\($0)".contains("pause it first") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty, "a refused snapshot writes nothing")
        try machine.pause()
        let uptime = machine.metrics().uptime
        #expect(uptime > .zero)
        machine.stop(.stopRequested)
        #expect(machine.waitUntilStopped(timeout: .seconds(30)) == .stopRequested)
        #expect(machine.state == .stopped)
        #expect(throws: HypervisorError.self) { try machine.resume() }
        #expect(machine.waitUntilStopped(timeout: nil) == .stopRequested, "asking again gives the same reason")
    }

    /// Saving a snapshot must not move a paused vCPU's clock back: the machine resumes afterwards.
    /// (On this host's kernel KVM's TSC-synchronisation heuristic would also absorb a stale write
    /// made within a second; the capture no longer makes one at all.)
    @Test func aSnapshotLeavesThePausedGuestsTSCWhereItWas() throws {
        let scratch = try ScratchDirectory()
        let machine = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=spin"),
                                  logger: Logger(label: "test-tsc"))
        defer {
            machine.stop(.stopRequested)
            _ = machine.waitUntilStopped(timeout: .seconds(30))
        }
        try machine.start()
        #expect(waitForConsole(machine, "STREAMVM-READY"))
        try machine.pause()
        let tsc = VCPUState.timeStampCounterMSR
        let before = try #require(try machine.vcpus[0].readMSRs([tsc]).first?.value)
        let saved = try machine.saveSnapshot(to: scratch.path)
        let after = try #require(try machine.vcpus[0].readMSRs([tsc]).first?.value)
        #expect(after >= before, "TSC went from \(before) back to \(after)")
        #expect(saved.vcpus[0].msrs.contains { $0.index == tsc }, "the TSC is still saved")
        try machine.resume()
        #expect(machine.state == .running)
    }

    @Test func devicesCountTheirWork() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("disk.img")
        try Data(patternedDisk(sectors: 64)).write(to: URL(fileURLWithPath: path))
        let (reason, console, machine) = try bootTestGuest("blk", disks: [try RawFileBackend(path: path, readOnly: false)])
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        let devices = Dictionary(uniqueKeysWithValues: machine.metrics().devices.map { ($0.name, $0.counters) })
        #expect(Set(devices.keys) == ["serial0", "i8042", "acpi-sleep", "power-off", "virtio-blk0"])
        let serial = try #require(devices["serial0"])
        // Every console byte is one THR write (plus register traffic: LSR polls are reads).
        #expect(serial.bytesWritten >= UInt64(console.utf8.count))
        #expect(serial.bytesRead > 0)
        let disk = try #require(devices["virtio-blk0"])
        // The blk guest reads sectors 0-7 and the last, writes 10-11 and reads them back, flushes,
        // asks for its id and sends three requests that must fail.
        #expect(disk.bytesWritten == 2 * 512)
        #expect(disk.bytesRead >= (8 + 1 + 2) * 512)
        #expect(disk.errors == 3)
        #expect(disk.requests >= 8)
        #expect(devices["power-off"]?.bytesWritten == 1)
    }
}
