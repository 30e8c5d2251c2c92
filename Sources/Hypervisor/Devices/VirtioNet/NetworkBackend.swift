/// Where a network device's frames go and come from: a port of the host switch, a tap device, or
/// anything else that moves Ethernet frames. The device and the backend meet only here, so a
/// backend (in the `Network` module) never sees virtqueues and the device never sees the switch.
///
/// Frames are whole Ethernet frames (destination MAC first), without the virtio-net header; any
/// offload metadata travels in `FrameOffload`.
public protocol NetworkBackend: AnyObject, Sendable {
    /// Connects the device end: from now on frames for the guest go to `endpoint.deliver`.
    /// Called once, before the first `transmit`.
    func connect(_ endpoint: any NetworkEndpoint)
    /// A frame the guest sent. The backend copies what it keeps; the buffer is valid only during
    /// the call. Returns false when the backend dropped the frame (full queue, rate limit, spoofed
    /// source, malformed): the device counts it, the guest sees the frame as sent (as on a wire).
    func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool
    /// The guest posted receive buffers after a `deliver` returned false: frames held back may be
    /// offered again.
    func receiveBuffersAvailable()
    /// The device is going away (machine stopped or device reset for good): release the port.
    func disconnect()
}

/// The device end of a backend: how frames reach the guest.
public protocol NetworkEndpoint: AnyObject, Sendable {
    /// Offers one frame to the guest. Returns false when the guest has no receive buffer now; the
    /// backend then keeps the frame (or drops it under its own queue limit) and offers it again
    /// after `NetworkBackend.receiveBuffersAvailable`.
    func deliver(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool
    /// Whether the guest takes a frame with this offload as it is (its driver negotiated the
    /// matching receive features). A backend asks before `deliver` and fills in the checksum or
    /// segments the frame when not; the device completes a checksum itself but drops (and counts)
    /// a frame with segmentation the guest did not accept.
    func accepts(_ offload: FrameOffload) -> Bool
}

extension NetworkEndpoint {
    /// Conservative default for endpoints that take only complete, MTU-sized frames.
    public func accepts(_ offload: FrameOffload) -> Bool { offload == .none }
}

/// Offload facts that travel with a frame between a device and a backend (virtio 1.x §5.1.6): a
/// checksum the sender left for the receiver to fill in, and segmentation the receiver must do if
/// it cannot take a large frame. `none` means a complete, checksummed, MTU-sized frame.
public struct FrameOffload: Sendable, Equatable {
    /// The L4 checksum is not filled in: it starts at `checksumStart` and goes at
    /// `checksumStart + checksumOffset` (VIRTIO_NET_HDR_F_NEEDS_CSUM).
    public var needsChecksum: Bool
    public var checksumStart: UInt16
    public var checksumOffset: UInt16
    /// Segmentation the frame still needs (VIRTIO_NET_HDR_GSO_*) and the segment size.
    public var segmentation: Segmentation
    public var segmentSize: UInt16
    public var headerLength: UInt16

    public enum Segmentation: UInt8, Sendable {
        case none = 0
        case tcpIPv4 = 1
        case udp = 3
        case tcpIPv6 = 4
    }

    public init(needsChecksum: Bool = false, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0,
                segmentation: Segmentation = .none, segmentSize: UInt16 = 0, headerLength: UInt16 = 0) {
        self.needsChecksum = needsChecksum
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.segmentation = segmentation
        self.segmentSize = segmentSize
        self.headerLength = headerLength
    }

    public static let none = FrameOffload()
}
