import Catalog

/// Where the bytes of a first access came from.
public enum AccessSource: String, Sendable, Codable {
    /// An all-zero chunk: no fetch, no cache.
    case zero
    /// Already in the local chunk cache.
    case cache
    /// Fetched from an origin while the reader waited (a demand miss).
    case fetched
    /// Entirely covered by the guest's own writes.
    case overlay
}

/// The first time a chunk of an image is read, which is what access-order learning and prefetch need.
public struct FirstAccess: Sendable, Codable, Equatable {
    public var role: ArtifactRole
    public var chunkIndex: Int
    /// nil for an all-zero chunk.
    public var chunk: ChunkID?
    /// Byte offset in the artifact of the read that touched the chunk first.
    public var offset: Int
    /// Seconds since the image was opened (monotonic).
    public var seconds: Double
    public var source: AccessSource
    /// How long the reader waited for the chunk (0 when it was local).
    public var stallSeconds: Double

    public init(role: ArtifactRole, chunkIndex: Int, chunk: ChunkID?, offset: Int, seconds: Double,
                source: AccessSource, stallSeconds: Double) {
        self.role = role
        self.chunkIndex = chunkIndex
        self.chunk = chunk
        self.offset = offset
        self.seconds = seconds
        self.source = source
        self.stallSeconds = stallSeconds
    }
}

/// Receives every first access of an image. Called on the reading thread: keep it quick.
public protocol AccessTraceSink: Sendable {
    func record(_ access: FirstAccess)
    /// A chunk put in place ahead of the guest (memory installed before it touched it): traced like
    /// a first access, but it says nothing about where the guest is, so it must not move prefetch.
    func recordInstalled(_ access: FirstAccess)
}

extension AccessTraceSink {
    public func recordInstalled(_ access: FirstAccess) { record(access) }
}
