/// The names of the objects in a catalogue directory. The layout is plain files so that any static
/// HTTP server can serve it; the names are the only paths a server or mirror ever opens.
///
///     catalog.json                      signed index (mutable)
///     models.json                       model index, signed by the key catalog.json delegates models to (mutable)
///     manifests/<h2>/<sha256>.json      appliance version manifests
///     chunks/<h2>/<sha256>.zst          zstd frames, named by the SHA-256 of their uncompressed bytes
///     dicts/<h2>/<sha256>.zdict         zstd dictionaries
///     models/<h2>/<sha256>.json         learned access-order models
///
/// `<h2>` is the first two hex digits of the digest, which keeps directories small.
public enum CatalogObject: Hashable, Sendable, CustomStringConvertible {
    case catalog
    case modelIndex
    case manifest(Digest)
    case chunk(ChunkID)
    case dictionary(Digest)
    case model(Digest)

    /// Longest valid object path ("dictionaries" is the longest kind name); longer request paths are
    /// refused before any parsing.
    public static let maximumPathLength = 96

    public enum Kind: String, CaseIterable, Sendable {
        case manifest = "manifests", chunk = "chunks", dictionary = "dicts", model = "models"

        var fileExtension: String {
            switch self {
            case .manifest, .model: return "json"
            case .chunk: return "zst"
            case .dictionary: return "zdict"
            }
        }
    }

    public var kind: Kind? {
        switch self {
        case .catalog, .modelIndex: return nil
        case .manifest: return .manifest
        case .chunk: return .chunk
        case .dictionary: return .dictionary
        case .model: return .model
        }
    }

    public var digest: Digest? {
        switch self {
        case .catalog, .modelIndex: return nil
        case .manifest(let d), .chunk(let d), .dictionary(let d), .model(let d): return d
        }
    }

    public init(kind: Kind, digest: Digest) {
        switch kind {
        case .manifest: self = .manifest(digest)
        case .chunk: self = .chunk(digest)
        case .dictionary: self = .dictionary(digest)
        case .model: self = .model(digest)
        }
    }

    /// Relative path inside a catalogue directory, also the URL path below the catalogue's base URL.
    public var path: String {
        if self == .modelIndex { return SignedModelIndex.fileName }
        guard let kind, let digest else { return SignedCatalog.fileName }
        let hex = digest.hex
        return "\(kind.rawValue)/\(hex.prefix(2))/\(hex).\(kind.fileExtension)"
    }

    public var description: String { path }

    /// Parses a request or file path. Only exact object names are accepted: no percent-encoding, no
    /// dot segments, no doubled or trailing slashes, no upper-case hex. One leading '/' is allowed.
    public init(path raw: some StringProtocol) throws {
        let text = String(raw)
        guard text.utf8.count <= Self.maximumPathLength else { throw CatalogError.invalidObjectName(text) }
        let path = text.hasPrefix("/") ? String(text.dropFirst()) : text
        if path == SignedCatalog.fileName { self = .catalog; return }
        if path == SignedModelIndex.fileName { self = .modelIndex; return }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, let kind = Kind(rawValue: String(parts[0])) else { throw CatalogError.invalidObjectName(text) }
        let suffix = "." + kind.fileExtension
        guard parts[2].hasSuffix(suffix) else { throw CatalogError.invalidObjectName(text) }
        let hex = parts[2].dropLast(suffix.count)
        guard let digest = try? Digest(hex: hex), parts[1] == hex.prefix(2) else { throw CatalogError.invalidObjectName(text) }
        self.init(kind: kind, digest: digest)
    }
}
