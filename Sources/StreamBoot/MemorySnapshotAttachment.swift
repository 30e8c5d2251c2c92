import Catalog
import Foundation
import Hypervisor
import StreamClient

/// Resuming a published memory snapshot instead of booting: the small device state (vmstate.json)
/// is fetched whole and validated first, then the machine resumes with none of its RAM present and
/// each page comes from the memory artifact as the guest touches it (`StreamedPageSource` behind the
/// userfaultfd handler). The memory artifact is also a prefetch target under `ArtifactRole.memory`,
/// so learned clusters of pages stream ahead exactly like disk chunks.
public struct MemorySnapshotAttachment: Sendable {
    /// userfaultfd fetch threads: a page waiting for the network holds up only the threads that touched
    /// it (vCPUs, device emulation); pages already local keep being served meanwhile.
    public static let fetchThreads = 4
    /// vmstate.json larger than this is refused before it is fetched (a 1 TiB guest's digest table is ~350 MiB).
    static let maximumStateBytes = 512 << 20

    public let state: MachineSnapshot
    public let memory: LazyImage
    public let pages: StreamedPageSource

    /// Fetches and validates the state, checks it against the memory artifact, and prepares the pages.
    public static func open(manifest: Manifest, loader: ChunkRouter, traceSink: (any AccessTraceSink)?,
                            readDeadlineSeconds: Double, faultAround: Bool = false) async throws -> MemorySnapshotAttachment {
        guard let stateArtifact = manifest.artifact(.state) else {
            throw StreamBootError.invalidSnapshot("the appliance has a memory snapshot but no vmstate.json (state artifact); republish the snapshot directory")
        }
        guard stateArtifact.size <= maximumStateBytes else {
            throw StreamBootError.invalidSnapshot("vmstate.json is \(stateArtifact.size) bytes, more than the \(maximumStateBytes >> 20) MiB allowed")
        }
        let stateImage = try await LazyImage.open(manifest: manifest, role: .state, loader: loader)
        let fetch = BlockingFetch(deadlineSeconds: readDeadlineSeconds)
        let stateBytes = try await Task.detached { try fetch.run { try await stateImage.read(offset: 0, length: stateImage.size) } }.value
        let state: MachineSnapshot
        do {
            state = try MachineSnapshot.decode(Data(stateBytes))
        } catch {
            throw StreamBootError.invalidSnapshot("\(error)")
        }
        // The image traces the memory's first touches (faults, and installs ahead of the guest).
        let memory = try await LazyImage.open(manifest: manifest, role: .memory, loader: loader, traceSink: traceSink)
        let pages = try StreamedPageSource(image: memory, layout: state.memory, readDeadlineSeconds: readDeadlineSeconds,
                                           faultAround: faultAround)
        return MemorySnapshotAttachment(state: state, memory: memory, pages: pages)
    }

    /// Sets `configuration` to resume this snapshot lazily (its RAM size and vCPU count must match).
    public func attach(to configuration: inout MachineConfiguration) throws {
        guard configuration.memorySize == state.memorySize, configuration.vcpuCount == state.vcpuCount else {
            throw StreamBootError.invalidSnapshot("the snapshot is of a \(state.memorySize >> 20) MiB, \(state.vcpuCount)-vCPU machine; the appliance asks for \(configuration.memorySize >> 20) MiB and \(configuration.vcpuCount) vCPUs")
        }
        configuration.restore = RestorePlan(state: state, pages: pages, loading: .lazy, waitMode: .blocking, fetchThreads: Self.fetchThreads)
    }
}
