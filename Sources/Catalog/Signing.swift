import Crypto
import Foundation

/// An Ed25519 key pair that signs catalogues. Key files are one line of text: a type tag and the raw
/// key in base64, so they can be read, copied and checked by people.
public struct SigningKey: Sendable {
    public let privateKey: Curve25519.Signing.PrivateKey
    public var publicKey: TrustedKey { TrustedKey(key: privateKey.publicKey) }

    static let tag = "streamvm-ed25519-private"

    public init() { privateKey = Curve25519.Signing.PrivateKey() }

    public init(file path: String) throws {
        let raw = try KeyFile.read(path: path, tag: Self.tag)
        do { privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: raw) } catch {
            throw CatalogError.invalidKeyFile(path: path, problem: "not a 32-byte Ed25519 private key")
        }
    }

    public var fileContents: String { "\(Self.tag) \(privateKey.rawRepresentation.base64EncodedString())\n" }

    public func sign(_ data: Data) throws -> Data { try privateKey.signature(for: data) }
}

/// A public key that clients and servers trust to sign catalogues.
public struct TrustedKey: Sendable, Equatable {
    public let key: Curve25519.Signing.PublicKey

    static let tag = "streamvm-ed25519-public"

    public init(key: Curve25519.Signing.PublicKey) { self.key = key }

    public init(file path: String) throws {
        let raw = try KeyFile.read(path: path, tag: Self.tag)
        try self.init(raw: raw, source: path)
    }

    public init(raw: Data, source: String) throws {
        do { key = try Curve25519.Signing.PublicKey(rawRepresentation: raw) } catch {
            throw CatalogError.invalidKeyFile(path: source, problem: "not a 32-byte Ed25519 public key")
        }
    }

    public var base64: String { key.rawRepresentation.base64EncodedString() }
    public var fileContents: String { "\(Self.tag) \(base64)\n" }

    public func verifies(_ signature: Data, for data: Data) -> Bool { key.isValidSignature(signature, for: data) }

    public static func == (lhs: TrustedKey, rhs: TrustedKey) -> Bool { lhs.key.rawRepresentation == rhs.key.rawRepresentation }
}

enum KeyFile {
    static func read(path: String, tag: String) throws -> Data {
        guard let text = FileManager.default.contents(atPath: path).flatMap({ String(data: $0, encoding: .utf8) }) else {
            throw CatalogError.invalidKeyFile(path: path, problem: "cannot read the file")
        }
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 2, fields[0] == tag else {
            throw CatalogError.invalidKeyFile(path: path, problem: "expected '\(tag) <base64>'")
        }
        guard let raw = Data(base64Encoded: String(fields[1])) else {
            throw CatalogError.invalidKeyFile(path: path, problem: "key is not base64")
        }
        return raw
    }
}
