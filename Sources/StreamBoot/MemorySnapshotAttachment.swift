import Hypervisor
import StreamClient

/// The seam where lazy guest memory (issue #5, branch `hv`) plugs into stream-boot: given the memory
/// snapshot and device state artifacts as `LazyImage`s, adjust the machine so its RAM is populated on
/// fault from the snapshot (a userfaultfd page source reading through the image) and its devices are
/// restored. The snapshot image is also registered with the prefetch driver under
/// `ArtifactRole.memory`, so learned clusters of pages stream ahead exactly like disk chunks.
public protocol MemorySnapshotAttachment: Sendable {
    func attach(memory: LazyImage, state: LazyImage?, to configuration: inout MachineConfiguration) throws
}
