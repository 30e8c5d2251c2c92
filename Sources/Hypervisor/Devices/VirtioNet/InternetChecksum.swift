/// The Internet checksum (RFC 1071), for completing a checksum a sender left to the receiver
/// (VIRTIO_NET_HDR_F_NEEDS_CSUM) when the receiving guest did not accept checksum offload.
enum InternetChecksum {
    /// The ones'-complement sum of `bytes` as big-endian 16-bit words, folded to 16 bits.
    static func sum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var total: UInt64 = 0
        var index = 0
        while index + 1 < bytes.count {
            total += UInt64(bytes[index]) << 8 | UInt64(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { total += UInt64(bytes[index]) << 8 }
        while total > 0xffff { total = (total & 0xffff) + (total >> 16) }
        return UInt16(total)
    }

    /// Fills in the checksum of `frame` from `start` to its end at `start + offset` (the field holds
    /// the pseudo-header's partial sum, which the sum includes). Returns false when the offsets do
    /// not fit the frame.
    static func complete(_ frame: UnsafeMutableRawBufferPointer, start: Int, offset: Int) -> Bool {
        guard start < frame.count, start + offset + 2 <= frame.count else { return false }
        let checksum = ~sum(UnsafeRawBufferPointer(rebasing: frame[start...]))
        frame[start + offset] = UInt8(checksum >> 8)
        frame[start + offset + 1] = UInt8(checksum & 0xff)
        return true
    }
}
