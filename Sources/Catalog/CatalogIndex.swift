import Foundation

/// `catalog.json`'s signed content: which appliances and versions exist and which manifest each is.
/// It is the only mutable object of a catalogue; everything it names is immutable and content-addressed.
public struct CatalogIndex: Codable, Sendable, Equatable {
    public static let currentFormat = 1

    public struct Version: Codable, Sendable, Equatable {
        public var manifest: Digest
        /// Total uncompressed bytes of the version's artifacts (for listings).
        public var size: Int
        public var published: Date

        public init(manifest: Digest, size: Int, published: Date) {
            self.manifest = manifest
            self.size = size
            self.published = published
        }
    }

    public struct Appliance: Codable, Sendable, Equatable {
        public var versions: [String: Version]
        /// The version a bare `name` resolves to: the one published last.
        public var latest: String
        /// The current learned access-order model (`models/<digest>.json`), if any.
        public var model: Digest?

        public init(versions: [String: Version], latest: String, model: Digest? = nil) {
            self.versions = versions
            self.latest = latest
            self.model = model
        }
    }

    public var format: Int
    /// Increases by one with every update, so a client can refuse to go back to an older catalogue.
    public var generation: Int
    public var appliances: [String: Appliance]
    /// The Ed25519 public key (base64) the catalogue delegates access-order models to: models.json
    /// signed by it names each appliance's model, so the origin that learns holds only that key and
    /// never the catalogue's. Absent: models are named only by `Appliance.model` in this index.
    public var modelKey: String?

    public init(generation: Int = 0, appliances: [String: Appliance] = [:], modelKey: String? = nil) {
        self.format = Self.currentFormat
        self.generation = generation
        self.appliances = appliances
        self.modelKey = modelKey
    }

    /// The delegated model-signing key, checked by `validate`.
    public var modelSigningKey: TrustedKey? {
        modelKey.flatMap { Data(base64Encoded: $0) }.flatMap { try? TrustedKey(raw: $0, source: SignedCatalog.fileName) }
    }

    /// Resolves `name` or `name@version` to its version entry.
    public func resolve(_ reference: String) throws -> (name: String, version: String, entry: Version) {
        let parts = reference.split(separator: "@", maxSplits: 1).map(String.init)
        let name = parts.first ?? ""
        guard let appliance = appliances[name] else { throw CatalogError.unknownAppliance(name) }
        let version = parts.count > 1 ? parts[1] : appliance.latest
        guard let entry = appliance.versions[version] else { throw CatalogError.unknownAppliance("\(name)@\(version)") }
        return (name, version, entry)
    }

    public func validate(file: String) throws {
        guard format == Self.currentFormat else {
            throw CatalogError.malformed(file: file, problem: "format \(format) is not supported (this build reads \(Self.currentFormat))")
        }
        guard generation >= 0 else { throw CatalogError.malformed(file: file, problem: "negative generation") }
        if let modelKey, modelSigningKey == nil {
            throw CatalogError.malformed(file: file, problem: "modelKey '\(modelKey.prefix(60))' is not a base64 Ed25519 public key")
        }
        for (name, appliance) in appliances {
            try ApplianceConfig.validateName(name, what: "appliance name", file: file)
            for version in appliance.versions.keys { try ApplianceConfig.validateName(version, what: "version", file: file) }
            guard appliance.versions[appliance.latest] != nil else {
                throw CatalogError.malformed(file: file, problem: "appliance \(name): latest version '\(appliance.latest)' is not listed")
            }
        }
    }

    /// Every manifest the index names.
    public var manifests: [Digest] {
        appliances.values.flatMap { $0.versions.values.map(\.manifest) }
    }
}
