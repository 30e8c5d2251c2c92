import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// Starts the ticker guest, waits for `rounds` progress lines, pauses it mid-run and saves it into
/// `directory`; the machine is returned paused.
func pausedTicker(snapshotInto directory: String, rounds: Int = 2, disks: [any BlockBackend] = []) throws -> Machine {
    let configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()),
                                             commandLine: "mode=ticker mib=2", disks: disks)
    let machine = try Machine(configuration: configuration, logger: Logger(label: "test-ticker"))
    try machine.start()
    guard waitForConsole(machine, "ticker round ", count: rounds) else {
        machine.stop(.stopRequested)
        throw HypervisorError.invalidConfiguration("ticker made no progress: \(machine.console.output)")
    }
    try machine.pause()
    try machine.saveSnapshot(to: directory)
    return machine
}

@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: mid-run snapshot tests skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct MidRunSnapshotTests {
    /// Firecracker's flow: pause, snapshot into a copy, resume the original (it goes on), then
    /// restore the copy — lazily and eagerly — and the guest finds its memory exactly as it left it.
    @Test(arguments: [RestorePlan.MemoryLoading.lazy, .eager])
    func aSnapshotTakenMidRunResumesWithMemoryIntactAndTheOriginalGoesOn(loading: RestorePlan.MemoryLoading) throws {
        let scratch = try ScratchDirectory()
        let original = try pausedTicker(snapshotInto: scratch.path)
        #expect(original.state == .paused)
        let roundsBefore = original.console.output.components(separatedBy: "ticker round ").count - 1
        try original.resume()
        #expect(waitForConsole(original, "ticker round ", count: roundsBefore + 2), "the original did not go on: \(original.console.output)")
        original.stop(.stopRequested)
        #expect(original.waitUntilStopped(timeout: .seconds(30)) == .stopRequested)
        #expect(!original.console.output.contains("FAIL"))

        let plan = try RestorePlan.load(directory: scratch.path, loading: loading)
        #expect(plan.state.version == MachineSnapshot.currentVersion)
        let restored = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: plan),
                                   logger: Logger(label: "test-ticker-restore"))
        try restored.start()
        #expect(waitForConsole(restored, "memory intact"), "console: \(restored.console.output)")
        #expect(waitForConsole(restored, "ticker round ", count: 2), "the restored guest did not go on: \(restored.console.output)")
        restored.stop(.stopRequested)
        #expect(restored.waitUntilStopped(timeout: .seconds(30)) == .stopRequested)
        #expect(!restored.console.output.contains("DAMAGED"))
        #expect(!restored.console.output.contains("FAIL"))
        if loading == .lazy {
            #expect(restored.metrics().pageFaultsServed > 0)
        }
    }

    /// The snapshot refers to the disk it was taken with (after flushing it) and refuses another size.
    @Test func disksAreFlushedAndRecordedByReference() throws {
        let scratch = try ScratchDirectory()
        let basePath = scratch.file("base.img")
        try Data(patternedDisk(sectors: 64)).write(to: URL(fileURLWithPath: basePath))
        let overlayPath = scratch.file("overlay.img")
        let overlay = try CopyOnWriteOverlay(base: try RawFileBackend(path: basePath, readOnly: true), overlayPath: overlayPath)
        try [UInt8](repeating: 0x77, count: 512).withUnsafeBytes { try overlay.write(at: 4096, from: $0) }
        let snapshotDirectory = scratch.file("snapshot")
        try FileManager.default.createDirectory(atPath: snapshotDirectory, withIntermediateDirectories: true)
        let machine = try pausedTicker(snapshotInto: snapshotDirectory, rounds: 1, disks: [overlay])
        machine.stop(.stopRequested)
        _ = machine.waitUntilStopped(timeout: .seconds(30))
        #expect(FileManager.default.fileExists(atPath: overlayPath + ".map"), "the overlay's block map was saved by the flush")
        let state = try RestorePlan.load(directory: snapshotDirectory).state
        #expect(state.disks == [DiskReference(device: "virtio-blk0", size: 64 * 512, readOnly: false,
                                              backend: BlockBackendReference(kind: "copy-on-write", path: basePath, overlayPath: overlayPath))])
        #expect(state.devices.map(\.id) == ["serial0", "virtio-blk0"])

        let otherPath = scratch.file("other.img")
        try Data(patternedDisk(sectors: 32)).write(to: URL(fileURLWithPath: otherPath))
        let configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat([]), disks: [try RawFileBackend(path: otherPath, readOnly: false)],
                                                 restore: try RestorePlan.load(directory: snapshotDirectory))
        #expect { _ = try Machine(configuration: configuration, logger: Logger(label: "test")) } throws: {
            "\($0)".contains("was 32768 bytes when the snapshot was taken, it is 16384 bytes now")
        }
        let withoutDisk = MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: try RestorePlan.load(directory: snapshotDirectory))
        #expect { _ = try Machine(configuration: withoutDisk, logger: Logger(label: "test")) } throws: { "\($0)".contains("1 disks, this machine has 0") }

        // The overlay the snapshot refers to, reopened over the same base, restores with the writes in it.
        let reopened = try CopyOnWriteOverlay(base: try RawFileBackend(path: basePath, readOnly: true), overlayPath: overlayPath)
        let restoring = MachineConfiguration(memorySize: 64 << 20, image: .flat([]), disks: [reopened],
                                             restore: try RestorePlan.load(directory: snapshotDirectory))
        _ = try Machine(configuration: restoring, logger: Logger(label: "test"))
        var sector = [UInt8](repeating: 0, count: 512)
        try sector.withUnsafeMutableBytes { try reopened.read(at: 4096, into: $0) }
        #expect(sector == [UInt8](repeating: 0x77, count: 512))
    }

    /// A request the guest had made available and notified (through the ioeventfd) but the device had
    /// not served when the machine was paused is in the snapshot's avail ring with no doorbell left
    /// to ring: the restored machine kicks its queues, so the guest does not wait forever.
    @Test func aRequestPendingAtThePauseIsServedAfterTheRestore() throws {
        let scratch = try ScratchDirectory()
        let diskPath = scratch.file("disk.img")
        try Data(patternedDisk(sectors: 64)).write(to: URL(fileURLWithPath: diskPath))
        let machine = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=blk",
                                                                      disks: [try RawFileBackend(path: diskPath, readOnly: false)]),
                                  logger: Logger(label: "test-pending"))
        try #require(!machine.doorbells.isEmpty, "this host's KVM has no ioeventfd: nothing can be pending")
        // Hold the doorbell thread back so the guest's first request stays pending.
        machine.doorbells.forEach { $0.pause() }
        try machine.start()
        #expect(waitForConsole(machine, "capacity at least 64 sectors"), "console: \(machine.console.output)")
        let queue = try #require(machine.blockDevices[0].snapshot().queues.first)
        let deadline = ContinuousClock.now + .seconds(30)
        while try machine.memory.load(UInt16.self, at: queue.availableRing + 2) == 0, ContinuousClock.now < deadline { usleep(1_000) }
        try machine.pause()
        #expect(try machine.memory.load(UInt16.self, at: queue.availableRing + 2) == 1, "the guest made its first request available")
        #expect(machine.metrics().devices.first { $0.name == "virtio-blk0" }?.counters.requests == 0, "and it was not served")
        try machine.saveSnapshot(to: scratch.path)
        machine.stop(.stopRequested)
        _ = machine.waitUntilStopped(timeout: .seconds(30))

        let restored = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat([]),
                                                                       disks: [try RawFileBackend(path: diskPath, readOnly: false)],
                                                                       restore: try RestorePlan.load(directory: scratch.path)),
                                   logger: Logger(label: "test-pending-restore"))
        #expect(restored.run(timeout: .seconds(120)) == .powerOff(code: 0), "console: \(restored.console.output)")
        #expect(restored.console.output.contains("ok   read sectors 0-7"))
        #expect(!restored.console.output.contains("FAIL"))
    }

    /// Firecracker's snapshot_path / mem_file_path: any two paths.
    @Test func snapshotFilesCanBeNamedFreely() throws {
        let scratch = try ScratchDirectory()
        let machine = try pausedTicker(snapshotInto: scratch.path, rounds: 1)
        let statePath = scratch.file("state.json")
        let memoryPath = scratch.file("guest.mem")
        let saved = try machine.saveSnapshot(statePath: statePath, memoryPath: memoryPath)
        machine.stop(.stopRequested)
        _ = machine.waitUntilStopped(timeout: .seconds(30))
        let plan = try RestorePlan.load(statePath: statePath, memoryPath: memoryPath)
        #expect(plan.state == saved)
        let restored = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: plan),
                                   logger: Logger(label: "test-ticker-restore"))
        try restored.start()
        #expect(waitForConsole(restored, "memory intact"), "console: \(restored.console.output)")
        restored.stop(.stopRequested)
        _ = restored.waitUntilStopped(timeout: .seconds(30))
    }
}
