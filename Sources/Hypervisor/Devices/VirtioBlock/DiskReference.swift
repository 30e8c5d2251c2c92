/// What a disk was backed by when a snapshot was taken (vmstate.json `disks`): a snapshot does
/// not copy disk contents, it refers to the files that hold them, flushed before saving.
public struct DiskReference: Codable, Sendable, Equatable {
    /// The disk's device id (`virtio-blk0`, ...).
    public var device: String
    /// Capacity in bytes: a restore refuses a disk of another size.
    public var size: UInt64
    public var readOnly: Bool
    /// The backend's own description (`BlockBackend.snapshotReference`).
    public var backend: BlockBackendReference
}

/// A backend's own account of where its bytes live.
public struct BlockBackendReference: Codable, Sendable, Equatable {
    /// `raw-file`, `copy-on-write`, or the backend's type name for other backends (a streamed disk).
    public var kind: String
    /// The file read (for copy-on-write: the read-only base's file, when it is a raw file).
    public var path: String?
    /// For copy-on-write: the overlay file holding the written blocks (its bitmap is `<overlay>.map`).
    public var overlayPath: String?

    public init(kind: String, path: String? = nil, overlayPath: String? = nil) {
        self.kind = kind
        self.path = path
        self.overlayPath = overlayPath
    }
}
