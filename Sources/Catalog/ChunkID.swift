import Crypto
import Foundation

/// A SHA-256 digest naming a content-addressed object (a chunk, manifest, dictionary or model).
/// Stored as four words so it is cheap to hash, compare and keep in large tables.
public struct Digest: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// SHA-256 output length in bytes (FIPS 180-4).
    public static let byteCount = 32

    public init(bytes: some Sequence<UInt8>) {
        var words: [UInt64] = [0, 0, 0, 0]
        var index = 0
        for byte in bytes {
            precondition(index < Self.byteCount, "digest longer than 32 bytes")
            words[index / 8] = (words[index / 8] << 8) | UInt64(byte)
            index += 1
        }
        precondition(index == Self.byteCount, "digest shorter than 32 bytes")
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    /// Hashes `data` with SHA-256.
    public static func of(_ data: some DataProtocol) -> Digest {
        Digest(bytes: SHA256.hash(data: data))
    }

    public static func of(_ buffer: UnsafeRawBufferPointer) -> Digest {
        Digest(bytes: SHA256.hash(data: buffer))
    }

    /// Parses exactly 64 lowercase hex digits; anything else is rejected so that one object has one name.
    public init(hex: some StringProtocol) throws {
        let utf8 = Array(hex.utf8)
        guard utf8.count == Self.byteCount * 2 else { throw CatalogError.invalidDigest(String(hex)) }
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.byteCount)
        var index = 0
        while index < utf8.count {
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else {
                throw CatalogError.invalidDigest(String(hex))
            }
            bytes.append(high << 4 | low)
            index += 2
        }
        self.init(bytes: bytes)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }

    public var bytes: [UInt8] {
        [w0, w1, w2, w3].flatMap { word in (0..<8).reversed().map { UInt8(truncatingIfNeeded: word >> ($0 * 8)) } }
    }

    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// First 12 hex digits, for logs and progress lines.
    public var short: String { String(hex.prefix(12)) }
    public var description: String { hex }

    public static func < (lhs: Digest, rhs: Digest) -> Bool {
        (lhs.w0, lhs.w1, lhs.w2, lhs.w3) < (rhs.w0, rhs.w1, rhs.w2, rhs.w3)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(hex: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}

/// A chunk is named by the SHA-256 of its uncompressed bytes.
public typealias ChunkID = Digest

/// Incremental SHA-256 for data that arrives in pieces (whole artifacts, downloads), so callers need
/// not import Crypto, whose `Digest` protocol would shadow ours.
public struct StreamingDigest {
    private var hasher = SHA256()

    public init() {}

    public mutating func update(_ buffer: UnsafeRawBufferPointer) { hasher.update(bufferPointer: buffer) }
    public mutating func update(_ data: some DataProtocol) { hasher.update(data: data) }
    public func finalize() -> Digest { Digest(bytes: hasher.finalize()) }
}
