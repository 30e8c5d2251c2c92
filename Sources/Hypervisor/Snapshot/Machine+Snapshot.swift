import Foundation
import Glibc

extension Machine {
    /// Saves this machine into `directory` as memory.img + vmstate.json (the catalogue's `memory`
    /// and `state` artifacts). See `saveSnapshot(statePath:memoryPath:)`.
    @discardableResult
    public func saveSnapshot(to directory: String) throws -> MachineSnapshot {
        try saveSnapshot(statePath: directory + "/" + MachineSnapshot.stateFileName,
                         memoryPath: directory + "/" + MachineSnapshot.memoryFileName)
    }

    /// Saves a paused machine (or one whose run has ended and been joined): vCPU, platform and
    /// device state to `statePath`, guest RAM to `memoryPath` (Firecracker's `snapshot_path` and
    /// `mem_file_path`). Disks are flushed first and recorded by reference. A running machine is
    /// refused before anything is written. Each file is written to a temporary name, flushed and
    /// renamed; the state file last, so a crash leaves no state file that points at a half-written
    /// image. A paused machine stays paused and `resume()` continues it.
    @discardableResult
    public func saveSnapshot(statePath: String, memoryPath: String) throws -> MachineSnapshot {
        let snapshot = try captureState { memory in try MemoryImageWriter.write(memory, to: memoryPath) }
        try AtomicFile.write(try snapshot.encoded(), to: statePath)
        return snapshot
    }

    /// The state of a paused machine as `saveSnapshot` records it, with guest RAM described (each
    /// page's digest) but not written anywhere: what a live migration sends before the pages, which
    /// the destination then fetches from this machine's memory and checks against those digests.
    /// The machine stays paused; its memory must not change while the digests are relied on.
    public func captureState() throws -> MachineSnapshot {
        try captureState { memory in try MemoryImageWriter.describe(memory) }
    }

    /// Captures vCPU, platform and device state of a paused (or finished) machine under the
    /// lifecycle lock; `describeMemory` saves or describes guest RAM once every page is present.
    private func captureState(describeMemory: (GuestMemory) throws -> MachineSnapshot.MemoryImage) throws -> MachineSnapshot {
        lifecycleLock.lock()
        defer { lifecycleLock.unlock() }
        switch state {
        case .paused:
            break // every vCPU completed its pending exit before parking
        case .stopped where hasFinishedRunning:
            for vcpu in vcpus { try vcpu.completePendingExit() }
        case .stopped:
            throw HypervisorError.invalidState("the machine is stopping: wait until its run has returned, then save the snapshot")
        case .running, .notStarted:
            throw HypervisorError.invalidState("a snapshot needs a paused machine (it is \(state.rawValue.lowercased())): pause it first")
        }
        let msrIndices = try system.msrIndexList()
        let vcpuStates = try vcpus.map { try VCPUState.capture($0, msrIndices: msrIndices, cpuid: vcpuCPUID[$0.index]) }
        let platform = try PlatformState.capture(virtualMachine)
        let deviceStates = try devices.saveStates()
        let disks = zip(configuration.disks, configuration.disks.indices).map { backend, index in
            DiskReference(device: Self.diskDeviceID(index), size: backend.size, readOnly: backend.isReadOnly, backend: backend.snapshotReference)
        }
        // Pages a lazy restore has not mapped yet are holes in the memfd: map them first, or the
        // image would save them as zeros.
        try pageFaultHandler?.populateAll()
        let image = try describeMemory(memory)
        let snapshot = MachineSnapshot(format: MachineSnapshot.formatName, version: MachineSnapshot.currentVersion,
                                       memorySize: memory.size, vcpuCount: vcpus.count, vcpus: vcpuStates,
                                       platform: platform, devices: deviceStates, disks: disks, memory: image)
        try snapshot.validate()
        return snapshot
    }
}
