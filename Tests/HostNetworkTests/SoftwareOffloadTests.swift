import Hypervisor
import HostNetwork
import Testing

/// A guest that left checksums and segmentation to the "hardware" sends to a receiver without
/// offloads: the switch does that work; a receiver with offloads gets the frame as sent.
@Suite struct SoftwareOffloadTests {
    static let macA = MACAddress("02:00:00:00:00:0a")!
    static let macB = MACAddress("02:00:00:00:00:0b")!
    static let macC = MACAddress("02:00:00:00:00:0c")!

    /// Ethernet + IPv4 (20) + TCP (20) + payload, TCP checksum field holding the pseudo-header sum
    /// (what a sender with checksum offload leaves there).
    static func tcpFrame(payload: [UInt8], sequence: UInt32) -> [UInt8] {
        var frame = macB.bytes + macA.bytes + [0x08, 0x00]
        let total = 40 + payload.count
        frame += [0x45, 0, UInt8(total >> 8 & 0xFF), UInt8(total & 0xFF), 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
        frame += [0x30, 0x39, 0x00, 0x50] + be32(sequence) + be32(0) + [0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
        frame += payload
        let pseudo = sum16(Array(frame[26..<34])) + 6 + UInt32(20 + payload.count)
        let folded = fold(pseudo)
        frame[50] = UInt8(folded >> 8); frame[51] = UInt8(folded & 0xFF)
        return frame
    }

    static func be32(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    static func sum16(_ bytes: [UInt8]) -> UInt32 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count { sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1]); index += 2 }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        return sum
    }
    static func fold(_ sum: UInt32) -> UInt16 {
        var value = sum
        while value >> 16 != 0 { value = (value & 0xFFFF) + (value >> 16) }
        return UInt16(value)
    }
    /// A checksum over data that includes its checksum field verifies to 0xFFFF.
    static func verifies(_ bytes: [UInt8], extra: UInt32 = 0) -> Bool { fold(sum16(bytes) + extra) == 0xFFFF }

    @Test func largeTCPFramesAreSegmentedForReceiversWithoutOffloads() throws {
        let network = NetworkSwitch(name: "gso")
        defer { network.stop() }
        let a = try network.addPort(PortConfiguration(name: "a", mac: Self.macA))
        let b = try network.addPort(PortConfiguration(name: "b", mac: Self.macB))
        let c = try network.addPort(PortConfiguration(name: "c", mac: Self.macC, acceptsOffloads: true))
        let (guestA, guestB, guestC) = (RecordingEndpoint(), RecordingEndpoint(), RecordingEndpoint())
        a.connect(guestA); b.connect(guestB); c.connect(guestC)
        let payload = (0..<3500).map { UInt8(truncatingIfNeeded: $0 * 13 + 5) }
        let frame = Self.tcpFrame(payload: payload, sequence: 1_000)
        let offload = FrameOffload(needsChecksum: true, checksumStart: 34, checksumOffset: 16, segmentation: .tcpIPv4, segmentSize: 1000, headerLength: 54)
        // B is unknown yet: flooded to B (no offloads: segmented) and C (offloads: as sent).
        #expect(frame.withUnsafeBytes { a.transmit($0, offload: offload) })
        let segments = guestB.waitFor(4).map(\.bytes)
        guestC.waitFor(1)
        #expect(segments.count == 4)
        #expect(guestC.frames.map(\.bytes) == [frame])
        #expect(guestC.frames.first?.offload == offload)
        #expect(guestB.frames.allSatisfy { $0.offload == .none })
        var reassembled: [UInt8] = []
        for (index, segment) in segments.enumerated() {
            let length = segment.count - 54
            #expect(length == (index < 3 ? 1000 : 500))
            #expect(Int(segment[16]) << 8 | Int(segment[17]) == 40 + length)                  // IPv4 total length
            #expect(Int(segment[18]) << 8 | Int(segment[19]) == 0x1234 + index)               // IPv4 id
            #expect(Self.verifies(Array(segment[14..<34])))                                   // IPv4 header checksum
            let sequence = UInt32(segment[38]) << 24 | UInt32(segment[39]) << 16 | UInt32(segment[40]) << 8 | UInt32(segment[41])
            #expect(sequence == 1_000 + UInt32(index * 1000))
            #expect(segment[47] & 0x08 == (index == 3 ? 0x08 : 0))                            // PSH on the last only
            let pseudo = Self.sum16(Array(segment[26..<34])) + 6 + UInt32(20 + length)
            #expect(Self.verifies(Array(segment[34...]), extra: pseudo))                      // TCP checksum
            reassembled += segment[54...]
        }
        #expect(reassembled == payload)
    }

    @Test func leftChecksumsAreFinishedForReceiversWithoutOffloads() throws {
        let network = NetworkSwitch(name: "csum")
        defer { network.stop() }
        let a = try network.addPort(PortConfiguration(name: "a", mac: Self.macA))
        let b = try network.addPort(PortConfiguration(name: "b", mac: Self.macB))
        let guestB = RecordingEndpoint()
        a.connect(RecordingEndpoint()); b.connect(guestB)
        let payload = (0..<301).map { UInt8(truncatingIfNeeded: $0 * 3) }
        let frame = Self.tcpFrame(payload: payload, sequence: 7)
        #expect(frame.withUnsafeBytes { a.transmit($0, offload: FrameOffload(needsChecksum: true, checksumStart: 34, checksumOffset: 16)) })
        let received = guestB.waitFor(1)
        #expect(received.count == 1)
        guard let segment = received.first?.bytes else { return }
        #expect(segment.count == frame.count)
        #expect(Array(segment[54...]) == payload)
        let pseudo = Self.sum16(Array(segment[26..<34])) + 6 + UInt32(20 + payload.count)
        #expect(Self.verifies(Array(segment[34...]), extra: pseudo))
    }
}
