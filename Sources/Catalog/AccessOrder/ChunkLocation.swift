/// One chunk of one artifact of an appliance version: where traces and models point. Encoded as the
/// compact string "disk:12" because traces and models list hundreds of thousands of them.
public struct ChunkLocation: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public var role: ArtifactRole
    public var index: Int

    public init(role: ArtifactRole, index: Int) {
        self.role = role
        self.index = index
    }

    public var description: String { "\(role.rawValue):\(index)" }

    public init(parsing text: some StringProtocol) throws {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let role = ArtifactRole(rawValue: String(parts[0])), parts[1].utf8.count <= 12,
              let index = Int(parts[1]), index >= 0 else {
            throw CatalogError.malformed(file: "chunk location", problem: "'\(text.prefix(40))' is not <role>:<chunk index>")
        }
        self.init(role: role, index: index)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text.prefix(40))' is not <role>:<chunk index>")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public static func < (lhs: ChunkLocation, rhs: ChunkLocation) -> Bool {
        lhs.role.rawValue == rhs.role.rawValue ? lhs.index < rhs.index : lhs.role.rawValue < rhs.role.rawValue
    }

    /// The manifest's entry for this location, or nil for an all-zero chunk; throws when out of range.
    public func ref(in manifest: Manifest) throws -> ChunkRef? {
        guard let artifact = manifest.artifact(role) else {
            throw CatalogError.malformed(file: "chunk location", problem: "\(self): the manifest has no \(role.rawValue) artifact")
        }
        guard artifact.chunks.indices.contains(index) else {
            throw CatalogError.malformed(file: "chunk location", problem: "\(self): the \(role.rawValue) artifact has \(artifact.chunks.count) chunks")
        }
        return artifact.chunks[index]
    }
}
