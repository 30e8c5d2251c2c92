import Catalog

/// The chunks a run may stream, with what each costs to fetch. Built from the manifest for the
/// artifacts that are read lazily (the disk now, the memory snapshot once lazy memory lands).
public struct StreamedChunks: Sendable {
    /// Stored bytes per chunk index of each role; nil marks an all-zero chunk (never fetched).
    public private(set) var stored: [ArtifactRole: [Int?]] = [:]
    /// Roles in the order a whole-image download walks them.
    public private(set) var roles: [ArtifactRole] = []

    public init(manifest: Manifest, roles: [ArtifactRole]) {
        for role in roles {
            guard let artifact = manifest.artifact(role) else { continue }
            self.roles.append(role)
            stored[role] = artifact.chunks.map { $0?.stored }
        }
    }

    /// Test and benchmark layouts without a manifest.
    public init(stored: [ArtifactRole: [Int?]]) {
        self.stored = stored
        roles = ArtifactRole.allCases.filter { stored[$0] != nil }
    }

    /// Bytes to fetch `location`; nil when it is all zero or not streamed.
    public func bytes(_ location: ChunkLocation) -> Int? {
        guard let list = stored[location.role], list.indices.contains(location.index) else { return nil }
        return list[location.index]
    }

    /// Every chunk that has bytes to fetch, in artifact order.
    public var allFetchable: [ChunkLocation] {
        roles.flatMap { role in
            (stored[role] ?? []).enumerated().compactMap { index, bytes in bytes == nil ? nil : ChunkLocation(role: role, index: index) }
        }
    }
}
