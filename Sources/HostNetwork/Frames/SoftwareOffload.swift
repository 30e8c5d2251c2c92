import Hypervisor

/// What a NIC would do for a sender that left work to the hardware (virtio-net's
/// VIRTIO_NET_HDR_F_NEEDS_CSUM and GSO), done in software for a receiver that cannot take such
/// frames: a guest without the offload features, or a tap without a vnet header.
enum SoftwareOffload {
    /// Fills in a checksum the sender left: the field holds the pseudo-header sum, the checksum
    /// covers `checksumStart` to the end (virtio 1.x §5.1.6.2). A zero result is sent as 0xFFFF,
    /// as Linux does (for UDP zero means "no checksum").
    static func finishChecksum(_ frame: inout [UInt8], offload: FrameOffload) {
        guard offload.needsChecksum else { return }
        let start = Int(offload.checksumStart), field = start + Int(offload.checksumOffset)
        guard field + 2 <= frame.count else { return }
        let sum = frame.withUnsafeBytes { onesComplementSum($0, from: start, to: $0.count) }
        let checksum = ~fold(sum)
        store16(checksum == 0 ? 0xFFFF : checksum, in: &frame, at: field)
    }

    /// Cuts a TCP segmentation-offload frame (IPv4 or IPv6, no IP options beyond the IPv4 header
    /// length, no IPv6 extension headers) into MSS-sized frames with their own lengths, IPv4 ids,
    /// sequence numbers, flags and checksums, and passes each to `emit`. Returns false when the
    /// frame is not one it can segment (UDP fragmentation offload, unknown headers): the caller
    /// drops it and counts `offloadUnsupported`.
    static func segment(_ frame: [UInt8], offload: FrameOffload, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
        guard offload.segmentation == .tcpIPv4 || offload.segmentation == .tcpIPv6, offload.segmentSize > 0 else { return false }
        let ethernet = EthernetFrame.headerLength
        guard frame.count > ethernet + 20 else { return false }
        let etherType = load16(frame, at: 12)
        let ipLength: Int
        let isIPv4: Bool
        switch etherType {
        case 0x0800:
            isIPv4 = true
            ipLength = Int(frame[ethernet] & 0x0F) * 4
            guard frame[ethernet] >> 4 == 4, ipLength >= 20, frame.count >= ethernet + ipLength + 20, frame[ethernet + 9] == 6 else { return false }
        case 0x86DD:
            isIPv4 = false
            ipLength = 40
            guard frame.count >= ethernet + 60, frame[ethernet] >> 4 == 6, frame[ethernet + 6] == 6 else { return false }
        default:
            return false
        }
        let tcp = ethernet + ipLength
        let tcpLength = Int(frame[tcp + 12] >> 4) * 4
        guard tcpLength >= 20, tcp + tcpLength <= frame.count else { return false }
        let header = tcp + tcpLength
        let payload = frame.count - header
        let mss = Int(offload.segmentSize)
        let firstSequence = load32(frame, at: tcp + 4)
        let firstID = isIPv4 ? load16(frame, at: ethernet + 4) : 0
        let flags = frame[tcp + 13]
        var segment = [UInt8]()
        segment.reserveCapacity(header + mss)
        var offset = 0
        var number = 0
        repeat {
            let length = min(mss, payload - offset)
            let last = offset + length >= payload
            segment.removeAll(keepingCapacity: true)
            segment.append(contentsOf: frame[0..<header])
            segment.append(contentsOf: frame[(header + offset)..<(header + offset + length)])
            if isIPv4 {
                store16(UInt16(ipLength + tcpLength + length), in: &segment, at: ethernet + 2)
                store16(firstID &+ UInt16(truncatingIfNeeded: number), in: &segment, at: ethernet + 4)
                store16(0, in: &segment, at: ethernet + 10)
                let sum = segment.withUnsafeBytes { onesComplementSum($0, from: ethernet, to: ethernet + ipLength) }
                store16(~fold(sum), in: &segment, at: ethernet + 10)
            } else {
                store16(UInt16(tcpLength + length), in: &segment, at: ethernet + 4)
            }
            store32(firstSequence &+ UInt32(truncatingIfNeeded: offset), in: &segment, at: tcp + 4)
            var segmentFlags = flags
            if !last { segmentFlags &= ~0x09 }  // FIN and PSH only on the last segment
            if number > 0 { segmentFlags &= ~0x80 }  // CWR only on the first
            segment[tcp + 13] = segmentFlags
            store16(0, in: &segment, at: tcp + 16)
            let sum = segment.withUnsafeBytes { bytes -> UInt32 in
                var sum: UInt32 = 0
                if isIPv4 {
                    sum = onesComplementSum(bytes, from: ethernet + 12, to: ethernet + 20)
                } else {
                    sum = onesComplementSum(bytes, from: ethernet + 8, to: ethernet + 40)
                }
                let tcpBytes = UInt32(tcpLength + length)
                sum &+= 6 &+ (tcpBytes >> 16) &+ (tcpBytes & 0xFFFF)
                return sum &+ onesComplementSum(bytes, from: tcp, to: bytes.count)
            }
            store16(~fold(sum), in: &segment, at: tcp + 16)
            segment.withUnsafeBytes(emit)
            offset += length
            number += 1
        } while offset < payload
        return true
    }

    /// The 32-bit running one's-complement sum of big-endian 16-bit words (odd tail padded).
    static func onesComplementSum(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int) -> UInt32 {
        var sum: UInt64 = 0
        var index = start
        while index + 1 < end {
            sum &+= UInt64(bytes[index]) << 8 | UInt64(bytes[index + 1])
            index += 2
        }
        if index < end { sum &+= UInt64(bytes[index]) << 8 }
        while sum >> 32 != 0 { sum = (sum & 0xFFFF_FFFF) + (sum >> 32) }
        return UInt32(sum)
    }

    static func fold(_ sum: UInt32) -> UInt16 {
        var value = sum
        while value >> 16 != 0 { value = (value & 0xFFFF) + (value >> 16) }
        return UInt16(value)
    }

    private static func load16(_ bytes: [UInt8], at offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }
    private static func load32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(load16(bytes, at: offset)) << 16 | UInt32(load16(bytes, at: offset + 2))
    }
    private static func store16(_ value: UInt16, in bytes: inout [UInt8], at offset: Int) {
        bytes[offset] = UInt8(value >> 8)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value)
    }
    private static func store32(_ value: UInt32, in bytes: inout [UInt8], at offset: Int) {
        store16(UInt16(value >> 16), in: &bytes, at: offset)
        store16(UInt16(truncatingIfNeeded: value), in: &bytes, at: offset + 2)
    }
}
