/// A device as the bus sees it (Firecracker's contract): it only ever gets an offset into its own
/// window, never an absolute address. Devices are shared by all vCPU threads, so each one guards its
/// own state.
public protocol BusDevice: AnyObject, Sendable {
    /// Fills `data` (1, 2, 4 or 8 bytes, little-endian) with the register at `offset`.
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer)
    /// Stores `data` (1, 2, 4 or 8 bytes, little-endian) into the register at `offset`.
    func write(offset: UInt64, from data: UnsafeRawBufferPointer)
}

extension UnsafeRawBufferPointer {
    /// The little-endian value of up to the first 8 bytes (a register write of any width).
    var littleEndianValue: UInt64 {
        var value: UInt64 = 0
        for (shift, byte) in prefix(8).enumerated() { value |= UInt64(byte) << (8 * shift) }
        return value
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Stores the low `count` bytes of `value`, little-endian (a register read of any width).
    func storeLittleEndian(_ value: UInt64) {
        for index in 0..<count { self[index] = index < 8 ? UInt8(truncatingIfNeeded: value >> (8 * index)) : 0 }
    }
}
