/// Why the switch dropped a frame. Every drop is counted under exactly one reason, on the port where
/// it happened, so a user can tell a misbehaving guest (spoofed, malformed) from a congested link.
public enum DropReason: Int, CaseIterable, Sendable, Codable {
    /// Shorter than an Ethernet header.
    case runt
    /// Longer than the port's maximum frame (or an offload frame beyond 64 KiB).
    case oversized
    /// The source MAC is not the port's own: a guest may not send as another.
    case spoofedSource
    /// Offload metadata that does not fit the frame (checksum or segment offsets outside it).
    case badOffload
    /// The sending port's queue (frames waiting for the rate limit or in the delay line) is full.
    case queueFull
    /// The receiving port's queue (frames waiting for the guest's receive buffers) is full.
    case receiveQueueFull
    /// A segmentation offload frame for a port that cannot take one and the switch cannot segment.
    case offloadUnsupported
    /// The port was disconnected while frames for it were queued.
    case portClosed

    /// The label in Prometheus text.
    public var label: String {
        switch self {
        case .runt: "runt"
        case .oversized: "oversized"
        case .spoofedSource: "spoofed_source"
        case .badOffload: "bad_offload"
        case .queueFull: "queue_full"
        case .receiveQueueFull: "receive_queue_full"
        case .offloadUnsupported: "offload_unsupported"
        case .portClosed: "port_closed"
        }
    }
}
