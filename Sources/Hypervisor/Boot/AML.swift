/// Just enough ACPI Machine Language to describe static objects (ACPI 6.4 §20, "ACPI Machine
/// Language Specification"): names, integers, strings, buffers, devices and scopes.
enum AML {
    static let nameOp: UInt8 = 0x08
    static let bytePrefix: UInt8 = 0x0a
    static let dwordPrefix: UInt8 = 0x0c
    static let stringPrefix: UInt8 = 0x0d
    static let scopeOp: UInt8 = 0x10
    static let bufferOp: UInt8 = 0x11
    static let packageOp: UInt8 = 0x12
    static let extendedOpPrefix: UInt8 = 0x5b
    static let deviceOp: UInt8 = 0x82
    static let rootPrefix: UInt8 = 0x5c

    /// PkgLength (§20.2.4): the length of what follows including the PkgLength bytes themselves.
    static func packageLength(of contentLength: Int) -> [UInt8] {
        if contentLength + 1 < 0x40 { return [UInt8(contentLength + 1)] }
        for extraBytes in 1...3 {
            let total = contentLength + 1 + extraBytes
            if total < 1 << (4 + 8 * extraBytes) {
                var bytes = [UInt8(extraBytes << 6) | UInt8(total & 0xf)]
                for index in 0..<extraBytes { bytes.append(UInt8((total >> (4 + 8 * index)) & 0xff)) }
                return bytes
            }
        }
        preconditionFailure("AML package of \(contentLength) bytes is too large")
    }

    /// A four-character name segment, padded with '_'.
    static func nameSegment(_ name: String) -> [UInt8] {
        let bytes = Array(name.utf8.prefix(4))
        return bytes + [UInt8](repeating: UInt8(ascii: "_"), count: 4 - bytes.count)
    }

    static func name(_ name: String, _ value: [UInt8]) -> [UInt8] { [nameOp] + nameSegment(name) + value }
    static func integer(_ value: UInt32) -> [UInt8] {
        value <= 0xff ? [bytePrefix, UInt8(value)] : [dwordPrefix] + MPTable.littleEndian(value)
    }
    static func string(_ value: String) -> [UInt8] { [stringPrefix] + Array(value.utf8) + [0] }
    static func buffer(_ bytes: [UInt8]) -> [UInt8] {
        let content = integer(UInt32(bytes.count)) + bytes
        return [bufferOp] + packageLength(of: content.count) + content
    }
    static func package(_ elements: [[UInt8]]) -> [UInt8] {
        let content = [UInt8(elements.count)] + elements.flatMap { $0 }
        return [packageOp] + packageLength(of: content.count) + content
    }
    static func device(_ name: String, _ body: [UInt8]) -> [UInt8] {
        let content = nameSegment(name) + body
        return [extendedOpPrefix, deviceOp] + packageLength(of: content.count) + content
    }
    /// `Scope (\NAME) { body }` for a root-level name such as _SB.
    static func rootScope(_ name: String, _ body: [UInt8]) -> [UInt8] {
        let content = [rootPrefix] + nameSegment(name) + body
        return [scopeOp] + packageLength(of: content.count) + content
    }

    // Resource descriptors for _CRS (§6.4.3).
    /// Memory32Fixed, read-write (large item 0x86, length 9).
    static func memory32Fixed(base: UInt32, length: UInt32) -> [UInt8] {
        [0x86, 9, 0, 1] + MPTable.littleEndian(base) + MPTable.littleEndian(length)
    }
    /// I/O port range with 16-bit decode, fixed at `base` (small item 0x47, length 7).
    static func ioPorts(base: UInt16, length: UInt8) -> [UInt8] {
        [0x47, 1] + MPTable.littleEndian(base) + MPTable.littleEndian(base) + [1, length]
    }
    /// Extended Interrupt, consumer, edge-triggered, active-high, exclusive, one GSI (large item 0x89).
    static func extendedInterrupt(_ gsi: UInt32) -> [UInt8] {
        [0x89, 6, 0, 0b0000_0011, 1] + MPTable.littleEndian(gsi)
    }
    /// End Tag with a zero checksum ("treated as correct", §6.4.2.9).
    static let endTag: [UInt8] = [0x79, 0]
}
