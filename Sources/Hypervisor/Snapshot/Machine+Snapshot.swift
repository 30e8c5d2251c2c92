import Foundation
import Glibc

extension Machine {
    /// Saves this machine into `directory` as memory.img + vmstate.json (the catalogue's `memory`
    /// and `state` artifacts). Call after `run` has returned (every vCPU thread has left the guest,
    /// which is what pausing means here); the machine is not run again. Each file is written to a
    /// temporary name, flushed and renamed; vmstate.json last, so a crash leaves no state file that
    /// points at a half-written image.
    @discardableResult
    public func saveSnapshot(to directory: String) throws -> MachineSnapshot {
        guard hasFinishedRunning else {
            throw HypervisorError.invalidConfiguration("a snapshot needs a paused machine: call saveSnapshot after run has returned")
        }
        for vcpu in vcpus { try vcpu.completePendingExit() }
        let msrIndices = try system.msrIndexList()
        let cpuid = try system.supportedCPUID()
        let policy = CPUIDPolicy(vcpuCount: vcpus.count)
        let vcpuStates = try vcpus.map { try VCPUState.capture($0, msrIndices: msrIndices, cpuid: policy.entries(from: cpuid, apicID: $0.index)) }
        let platform = try PlatformState.capture(virtualMachine)
        let devices = MachineSnapshot.Devices(serial: serial.snapshot(), virtio: blockDevices.map { $0.snapshot() })
        let image = try MemoryImageWriter.write(memory, to: directory + "/" + MachineSnapshot.memoryFileName)
        let snapshot = MachineSnapshot(format: MachineSnapshot.formatName, version: MachineSnapshot.currentVersion,
                                       memorySize: memory.size, vcpuCount: vcpus.count, vcpus: vcpuStates,
                                       platform: platform, devices: devices, memory: image)
        try snapshot.validate()
        try AtomicFile.write(try snapshot.encoded(), to: directory + "/" + MachineSnapshot.stateFileName)
        return snapshot
    }

    /// Loads a snapshot's device state into this machine's devices (same device set required).
    func restoreDevices(_ devices: MachineSnapshot.Devices) throws {
        guard devices.virtio.count == blockDevices.count else {
            throw HypervisorError.invalidSnapshot("snapshot has \(devices.virtio.count) virtio devices, this machine has \(blockDevices.count) disks")
        }
        serial.restore(devices.serial)
        for (transport, state) in zip(blockDevices, devices.virtio) { try transport.restore(state) }
    }
}

/// Temp file, fsync, rename: a reader sees the old file or the whole new one.
enum AtomicFile {
    static func write(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HypervisorError.ioFailed("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(temporary) }
        }
        try data.withUnsafeBytes { bytes in
            var written = 0
            while written < bytes.count {
                let result = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
                if result < 0, errno == EINTR { continue }
                guard result > 0 else { throw HypervisorError.ioFailed("cannot write \(temporary): \(String(cString: strerror(errno)))") }
                written += result
            }
        }
        guard fsync(fd) == 0, rename(temporary, path) == 0 else {
            throw HypervisorError.ioFailed("cannot save \(path): \(String(cString: strerror(errno)))")
        }
        ok = true
    }
}
