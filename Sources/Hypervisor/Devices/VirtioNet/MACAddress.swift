/// An Ethernet (EUI-48) address: what a network device reports to the guest, what an appliance names
/// and what the host switch learns. Kept in the low 48 bits of one integer so the switch's MAC table
/// hashes and compares it without touching an array; coded as its `aa:bb:cc:dd:ee:ff` text.
public struct MACAddress: Sendable, Hashable, Codable, CustomStringConvertible {
    public let value: UInt64

    public static let broadcast = MACAddress(value: 0xFFFF_FFFF_FFFF)

    public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    /// Six bytes; nil for any other count.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.init(value: bytes.reduce(0) { $0 << 8 | UInt64($1) })
    }

    /// Any address in `aa:bb:cc:dd:ee:ff` form, group addresses included (frames carry those); nil
    /// for anything else. A device's own address goes through `init(parsing:)`.
    public init?(_ text: String) {
        guard let bytes = Self.parseBytes(text) else { return nil }
        self.init(bytes: bytes)
    }

    /// Parses a device address `52:54:00:12:34:56` (colon-separated, two hex digits per byte, either
    /// case). It must be unicast (group bit clear) and not all zeros: a guest with such a MAC could
    /// not receive frames addressed to it.
    public init(parsing text: String) throws(MACAddressError) {
        guard let bytes = Self.parseBytes(text) else { throw .malformed(text) }
        guard bytes[0] & 1 == 0 else { throw .multicast(text) }
        guard bytes.contains(where: { $0 != 0 }) else { throw .allZero }
        self.init(value: bytes.reduce(0) { $0 << 8 | UInt64($1) })
    }

    /// Reads six bytes at `offset` of a frame (the caller checked the length).
    @inlinable
    public init(frame: UnsafeRawBufferPointer, at offset: Int) {
        var value: UInt64 = 0
        for index in offset..<(offset + 6) { value = value << 8 | UInt64(frame[index]) }
        self.value = value
    }

    /// The group bit (first byte's lowest bit): broadcast and multicast go to every port.
    public var isMulticast: Bool { (value >> 40) & 1 == 1 }

    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * UInt64($0))) } }

    /// Writes the six bytes at `offset`.
    public func write(to frame: UnsafeMutableRawBufferPointer, at offset: Int) {
        for index in 0..<6 { frame[offset + index] = UInt8(truncatingIfNeeded: value >> (40 - 8 * UInt64(index))) }
    }

    public var description: String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private static func parseBytes(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}

public enum MACAddressError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case multicast(String)
    case allZero

    public var description: String {
        switch self {
        case .malformed(let text): return "\"\(text)\" is not a MAC address (six two-digit hex bytes separated by colons, e.g. 52:54:00:12:34:56)"
        case .multicast(let text): return "\(text) is a multicast address (lowest bit of the first byte set); a device needs a unicast one"
        case .allZero: return "00:00:00:00:00:00 is not a usable device address"
        }
    }
}
