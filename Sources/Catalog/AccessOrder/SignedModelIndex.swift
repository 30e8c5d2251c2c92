import Foundation

/// Which access-order model each appliance uses, as content-addressed `models/<digest>.json`
/// objects.
public struct ModelIndex: Codable, Sendable, Equatable {
    public static let currentFormat = 1

    public var format: Int
    /// Increases with every update (a learner never writes an older one over a newer one).
    public var generation: Int
    /// Appliance name → digest of its current model.
    public var models: [String: Digest]

    public init(generation: Int = 0, models: [String: Digest] = [:]) {
        self.format = Self.currentFormat
        self.generation = generation
        self.models = models
    }

    public func validate(file: String) throws {
        guard format == Self.currentFormat else {
            throw CatalogError.malformed(file: file, problem: "format \(format) is not supported (this build reads \(Self.currentFormat))")
        }
        guard generation >= 0 else { throw CatalogError.malformed(file: file, problem: "negative generation") }
        for name in models.keys { try ApplianceConfig.validateName(name, what: "appliance name", file: file) }
    }
}

/// `models.json`: the model index signed by the key the catalogue delegates models to
/// (`CatalogIndex.modelKey`). The origin that learns holds that key only: a stolen model key can
/// point clients at another model (a slower boot), never at other bytes, because every chunk is
/// still checked against the manifest the catalogue key signed.
///
/// Same envelope as catalog.json (base64 canonical payload, public key, signature over the payload
/// bytes), but a signature is always required: an unsigned model index delegates nothing.
public struct SignedModelIndex: Sendable {
    public static let fileName = "models.json"
    /// One digest per appliance: 1 MiB is thousands of appliances.
    public static let maximumBytes = 1 << 20
    static let formatTag = "streamvm-models-v1"

    public let index: ModelIndex
    public let signer: TrustedKey
    let payload: Data
    let signature: Data

    private struct Envelope: Codable {
        var format: String
        var payload: String
        var publicKey: String
        var signature: String
    }

    public init(index: ModelIndex, key: SigningKey) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        self.index = index
        self.payload = try encoder.encode(index)
        self.signature = try key.sign(payload)
        self.signer = key.publicKey
    }

    private init(index: ModelIndex, signer: TrustedKey, payload: Data, signature: Data) {
        self.index = index
        self.signer = signer
        self.payload = payload
        self.signature = signature
    }

    public func encoded() throws -> Data {
        let envelope = Envelope(format: Self.formatTag, payload: payload.base64EncodedString(),
                                publicKey: signer.base64, signature: signature.base64EncodedString())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(envelope)
    }

    /// Parses and verifies `models.json` bytes from anywhere. `trust`: the key the catalogue delegates
    /// to (nil only where the delegation is checked elsewhere, e.g. a server verifying what it serves).
    public static func decode(_ data: Data, trust: TrustedKey?, file: String = SignedModelIndex.fileName) throws -> SignedModelIndex {
        guard data.count <= maximumBytes else { throw CatalogError.tooLarge(file: file, size: data.count, limit: maximumBytes) }
        let envelope: Envelope
        do { envelope = try JSONDecoder().decode(Envelope.self, from: data) } catch {
            throw CatalogError.malformed(file: file, problem: describe(error))
        }
        guard envelope.format == formatTag else {
            throw CatalogError.malformed(file: file, problem: "format '\(envelope.format.prefix(40))' is not \(formatTag)")
        }
        guard let payload = Data(base64Encoded: envelope.payload), let raw = Data(base64Encoded: envelope.publicKey),
              let signature = Data(base64Encoded: envelope.signature) else {
            throw CatalogError.malformed(file: file, problem: "payload, publicKey or signature is not base64")
        }
        let claimed = try TrustedKey(raw: raw, source: file)
        if let trust, trust != claimed { throw CatalogError.untrustedKey(file: file, key: claimed.base64) }
        guard claimed.verifies(signature, for: payload) else { throw CatalogError.badSignature(file: file) }
        let index: ModelIndex
        do { index = try JSONDecoder().decode(ModelIndex.self, from: payload) } catch {
            throw CatalogError.malformed(file: file, problem: describe(error))
        }
        try index.validate(file: file)
        return SignedModelIndex(index: index, signer: claimed, payload: payload, signature: signature)
    }
}
