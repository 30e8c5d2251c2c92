import Foundation

/// The bytes of `catalog.json`: the index as canonical JSON in base64, and an Ed25519 signature over
/// exactly those bytes. Keeping payload and signature in one file lets a catalogue update be a single
/// atomic rename, and lets any static server hand it out unchanged.
public struct SignedCatalog: Sendable {
    public static let fileName = "catalog.json"
    /// catalog.json larger than this is refused before parsing (thousands of appliances fit in 1 MiB).
    public static let maximumBytes = 16 << 20
    static let formatTag = "streamvm-catalog-v1"

    public let index: CatalogIndex
    /// The exact signed bytes, kept so the file can be re-served and re-verified unchanged.
    public let payload: Data
    public let signature: Data?
    public let signer: TrustedKey?

    private struct Envelope: Codable {
        var format: String
        var payload: String
        var publicKey: String?
        var signature: String?
    }

    /// Signs `index` with `key`; without a key the catalogue is unsigned and clients need --insecure.
    public init(index: CatalogIndex, key: SigningKey?) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        self.index = index
        self.payload = try encoder.encode(index)
        self.signature = try key?.sign(payload)
        self.signer = key?.publicKey
    }

    private init(index: CatalogIndex, payload: Data, signature: Data?, signer: TrustedKey?) {
        self.index = index
        self.payload = payload
        self.signature = signature
        self.signer = signer
    }

    public func encoded() throws -> Data {
        let envelope = Envelope(format: Self.formatTag, payload: payload.base64EncodedString(),
                                publicKey: signer?.base64, signature: signature?.base64EncodedString())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(envelope)
    }

    /// How a reader decides whether to accept a catalogue's signature.
    public enum Trust: Sendable {
        /// Only a valid signature by this key is accepted.
        case key(TrustedKey)
        /// A valid signature by any one of these keys (a host's trust store) is accepted; none
        /// accepts nothing.
        case anyOf([TrustedKey])
        /// Any valid signature, or none (the caller asked for --insecure or is a publisher reading its own catalogue).
        case insecure

        /// Whether a catalogue signed by `signer` passes this policy.
        public func accepts(_ signer: TrustedKey) -> Bool {
            switch self {
            case .key(let trusted): return trusted == signer
            case .anyOf(let trusted): return trusted.contains(signer)
            case .insecure: return true
            }
        }

        /// Only `insecure` reads an unsigned catalogue.
        public var acceptsUnsigned: Bool {
            if case .insecure = self { return true }
            return false
        }
    }

    /// Parses and verifies `catalog.json` bytes from anywhere.
    public static func decode(_ data: Data, trust: Trust, file: String = SignedCatalog.fileName) throws -> SignedCatalog {
        guard data.count <= maximumBytes else { throw CatalogError.tooLarge(file: file, size: data.count, limit: maximumBytes) }
        let envelope: Envelope
        do { envelope = try JSONDecoder().decode(Envelope.self, from: data) } catch {
            throw CatalogError.malformed(file: file, problem: describe(error))
        }
        guard envelope.format == formatTag else {
            throw CatalogError.malformed(file: file, problem: "format '\(envelope.format.prefix(40))' is not \(formatTag)")
        }
        guard let payload = Data(base64Encoded: envelope.payload) else {
            throw CatalogError.malformed(file: file, problem: "payload is not base64")
        }
        var signer: TrustedKey?
        var signature: Data?
        switch (envelope.publicKey, envelope.signature) {
        case (nil, nil):
            if !trust.acceptsUnsigned { throw CatalogError.unsigned(file: file) }
        case (let key?, let sig?):
            guard let raw = Data(base64Encoded: key), let sigBytes = Data(base64Encoded: sig) else {
                throw CatalogError.malformed(file: file, problem: "publicKey or signature is not base64")
            }
            let claimed = try TrustedKey(raw: raw, source: file)
            if !trust.accepts(claimed) {
                throw CatalogError.untrustedKey(file: file, key: claimed.base64)
            }
            guard claimed.verifies(sigBytes, for: payload) else { throw CatalogError.badSignature(file: file) }
            signer = claimed
            signature = sigBytes
        default:
            throw CatalogError.malformed(file: file, problem: "publicKey and signature must both be present or both absent")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let index: CatalogIndex
        do { index = try decoder.decode(CatalogIndex.self, from: payload) } catch {
            throw CatalogError.malformed(file: file, problem: describe(error))
        }
        try index.validate(file: file)
        return SignedCatalog(index: index, payload: payload, signature: signature, signer: signer)
    }
}
