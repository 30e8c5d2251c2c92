import Hypervisor

/// Sizes and checks of an Ethernet frame as the switch sees it (no preamble, no FCS).
public enum EthernetFrame {
    /// Destination, source, EtherType: anything shorter is not a frame.
    public static let headerLength = 14
    /// A full 1500-byte payload plus header and one 802.1Q tag.
    public static let defaultMaximumLength = 1518
    /// The largest frame a segmentation offload may carry (64 KiB IP packet plus Ethernet header).
    public static let maximumOffloadLength = 65_535 + 14 + 4

    public static func destination(_ frame: UnsafeRawBufferPointer) -> MACAddress { MACAddress(frame: frame, at: 0) }
    public static func source(_ frame: UnsafeRawBufferPointer) -> MACAddress { MACAddress(frame: frame, at: 6) }
}

extension FrameOffload {
    /// True when the metadata fits the frame: a checksum request points inside it, a segmentation
    /// request has a segment size and a header length within the frame (virtio 1.x §5.1.6.2). A
    /// backend must not act on offsets a guest made up.
    func isConsistent(frameLength: Int) -> Bool {
        if needsChecksum {
            guard Int(checksumStart) >= EthernetFrame.headerLength,
                  Int(checksumStart) + Int(checksumOffset) + 2 <= frameLength else { return false }
        }
        if segmentation != .none {
            guard segmentSize > 0, Int(headerLength) > EthernetFrame.headerLength, Int(headerLength) < frameLength,
                  needsChecksum else { return false }
        }
        return true
    }

    /// Whether the frame still needs work a receiver without offloads cannot do.
    var needsWork: Bool { needsChecksum || segmentation != .none }
}
