import Foundation

/// The role an artifact plays when the appliance starts.
public enum ArtifactRole: String, Codable, Sendable, CaseIterable {
    case disk, memory, state, kernel, initrd

    /// The file name of this artifact in an appliance directory.
    public var fileName: String {
        switch self {
        case .disk: return "disk.img"
        case .memory: return "memory.img"
        case .state: return "vmstate.json"
        case .kernel: return "kernel"
        case .initrd: return "initrd"
        }
    }
}

/// One fixed-size piece of an artifact. `nil` in `Artifact.chunks` marks an all-zero chunk, which is
/// never stored or sent.
public struct ChunkRef: Codable, Sendable, Equatable, Hashable {
    /// SHA-256 of the uncompressed bytes.
    public var id: ChunkID
    /// Bytes of the stored zstd frame (what a client downloads).
    public var stored: Int
    /// Index into `Manifest.dictionaries`, when the frame was compressed with a dictionary.
    public var dict: Int?

    public init(id: ChunkID, stored: Int, dict: Int? = nil) {
        self.id = id
        self.stored = stored
        self.dict = dict
    }
}

public struct Artifact: Codable, Sendable, Equatable {
    public var role: ArtifactRole
    public var size: Int
    /// SHA-256 of the whole artifact, so a full download can be checked end to end.
    public var digest: Digest
    public var chunks: [ChunkRef?]

    public init(role: ArtifactRole, size: Int, digest: Digest, chunks: [ChunkRef?]) {
        self.role = role
        self.size = size
        self.digest = digest
        self.chunks = chunks
    }

    /// Bytes its chunks take on the wire and in a catalogue (compressed; all-zero chunks take none).
    public var storedBytes: Int { chunks.reduce(0) { $0 + ($1?.stored ?? 0) } }
}

/// An appliance version: its config and, per artifact, the ordered chunk list. A manifest is an
/// immutable object named by the SHA-256 of its bytes.
public struct Manifest: Codable, Sendable, Equatable {
    public static let currentFormat = 1
    /// Manifests larger than this are refused before parsing (a 1 TiB disk at 64 KiB chunks is ~1.5 GiB
    /// of entries, far beyond any appliance StreamVM is for; 256 MiB of JSON is ~2.5M chunks).
    public static let maximumBytes = 256 << 20
    public static let minimumChunkSize = 4096
    public static let maximumChunkSize = 16 << 20

    public var format: Int
    public var config: ApplianceConfig
    public var chunkSize: Int
    public var dictionaries: [Digest]
    public var artifacts: [Artifact]

    public init(config: ApplianceConfig, chunkSize: Int, dictionaries: [Digest], artifacts: [Artifact]) {
        self.format = Self.currentFormat
        self.config = config
        self.chunkSize = chunkSize
        self.dictionaries = dictionaries
        self.artifacts = artifacts
    }

    public func artifact(_ role: ArtifactRole) -> Artifact? { artifacts.first { $0.role == role } }

    /// Uncompressed length of chunk `index` of `artifact` (the last one may be short).
    public func chunkLength(_ artifact: Artifact, index: Int) -> Int {
        min(chunkSize, artifact.size - index * chunkSize)
    }

    /// Every distinct stored chunk of this manifest.
    public var distinctChunks: Set<ChunkRef> {
        var set = Set<ChunkRef>()
        for artifact in artifacts { for case let chunk? in artifact.chunks { set.insert(chunk) } }
        return set
    }

    /// Canonical bytes: sorted keys, no whitespace, so the same manifest always has the same digest.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// Parses and checks a manifest received from anywhere. `expected`, when given, is the digest the
    /// signed catalogue names; bytes that do not hash to it are refused before parsing.
    public static func decode(_ data: Data, expected: Digest?, file: String) throws -> Manifest {
        guard data.count <= maximumBytes else { throw CatalogError.tooLarge(file: file, size: data.count, limit: maximumBytes) }
        if let expected {
            let actual = Digest.of(data)
            guard actual == expected else { throw CatalogError.digestMismatch(object: file, actual: actual.hex) }
        }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: data)
        } catch {
            throw CatalogError.malformed(file: file, problem: describe(error))
        }
        try manifest.validate(file: file)
        return manifest
    }

    /// Structural checks a client relies on: sizes agree with chunk counts, dictionary indices exist,
    /// stored sizes are plausible.
    public func validate(file: String) throws {
        guard format == Self.currentFormat else {
            throw CatalogError.malformed(file: file, problem: "format \(format) is not supported (this build reads \(Self.currentFormat))")
        }
        try config.validate(file: file)
        guard (Self.minimumChunkSize...Self.maximumChunkSize).contains(chunkSize), chunkSize.nonzeroBitCount == 1 else {
            throw CatalogError.malformed(file: file, problem: "chunkSize \(chunkSize) must be a power of two in \(Self.minimumChunkSize)...\(Self.maximumChunkSize)")
        }
        var seen = Set<ArtifactRole>()
        for artifact in artifacts {
            guard seen.insert(artifact.role).inserted else {
                throw CatalogError.malformed(file: file, problem: "artifact \(artifact.role.rawValue) listed twice")
            }
            guard artifact.size > 0 else {
                throw CatalogError.malformed(file: file, problem: "artifact \(artifact.role.rawValue) has size \(artifact.size)")
            }
            // Rounded up without `size + chunkSize - 1`, which overflows for a hostile size near Int.max.
            let expectedChunks = artifact.size / chunkSize + (artifact.size % chunkSize == 0 ? 0 : 1)
            guard artifact.chunks.count == expectedChunks else {
                throw CatalogError.malformed(file: file, problem: "artifact \(artifact.role.rawValue) of \(artifact.size) bytes needs \(expectedChunks) chunks, lists \(artifact.chunks.count)")
            }
            for case let chunk? in artifact.chunks {
                // A zstd frame is never larger than its input plus a small bound; anything bigger is hostile.
                guard chunk.stored > 0, chunk.stored <= chunkSize + chunkSize / 128 + 512 else {
                    throw CatalogError.malformed(file: file, problem: "chunk \(chunk.id.short) claims \(chunk.stored) stored bytes")
                }
                if let dict = chunk.dict, !dictionaries.indices.contains(dict) {
                    throw CatalogError.malformed(file: file, problem: "chunk \(chunk.id.short) names dictionary \(dict) of \(dictionaries.count)")
                }
            }
        }
        // Any shape `streamvm run` starts is valid (a disk is optional: kernel + initrd is a common
        // appliance); a manifest with nothing in it is not an appliance.
        guard !artifacts.isEmpty else { throw CatalogError.malformed(file: file, problem: "lists no artifacts") }
    }
}

/// A readable one-line account of a decoding error, naming the field path where possible.
func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.dataCorrupted(let context):
        return "\(path(context.codingPath))\(context.debugDescription)"
    case DecodingError.keyNotFound(let key, let context):
        return "\(path(context.codingPath))missing field '\(key.stringValue)'"
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
        return "\(path(context.codingPath))\(context.debugDescription)"
    case let error as CatalogError:
        return error.description
    default:
        return String(describing: error)
    }
}

private func path(_ codingPath: [any CodingKey]) -> String {
    codingPath.isEmpty ? "" : codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") + ": "
}
