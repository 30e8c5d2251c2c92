import Foundation

/// The bytes libFuzzer hands a target, turned into what the parsers take.
public enum FuzzInput {
    public static func data(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Data {
        guard let bytes, count > 0 else { return Data() }
        return Data(bytes: bytes, count: count)
    }

    /// The input as text the way a server sees a header: invalid UTF-8 repaired, as Swift's String does.
    public static func string(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> String {
        guard let bytes, count > 0 else { return "" }
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }
}

/// Consumes a fuzz input front to back as little-endian integers; past the end every read is zero,
/// so any input (even empty) drives the target to completion.
public struct FuzzReader {
    private let bytes: [UInt8]
    public private(set) var position = 0

    public init(_ bytes: UnsafePointer<UInt8>?, _ count: Int) {
        self.bytes = bytes.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    }

    public init(_ data: Data) { bytes = Array(data) }

    public var isAtEnd: Bool { position >= bytes.count }

    public mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T {
        var value: T = 0
        for shift in stride(from: 0, to: T.bitWidth, by: 8) {
            if position < bytes.count { value |= T(bytes[position]) << shift }
            position += 1
        }
        return value
    }

    /// Everything not read yet.
    public mutating func remaining() -> [UInt8] {
        defer { position = bytes.count }
        return position < bytes.count ? Array(bytes[position...]) : []
    }
}
