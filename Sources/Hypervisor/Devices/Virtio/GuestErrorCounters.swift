import Synchronization

/// Counts what a guest got refused, per reason: malformed rings, bad queue setups, bad requests.
/// A guest can trigger these as fast as it likes, so they are counted (cheap, bounded: one entry per
/// reason) instead of each being a log line (Firecracker's approach: metrics, plus a rate-limited log).
public final class GuestErrorCounters: Sendable {
    private let counts = Mutex<[String: UInt64]>([:])

    public init() {}

    /// Adds one refusal for `reason` (a short snake_case label, also usable as a metric label).
    public func count(_ reason: String) {
        counts.withLock { $0[reason, default: 0] &+= 1 }
    }

    /// Every reason seen so far with its count.
    public var values: [String: UInt64] { counts.withLock { $0 } }
}

/// What one virtio device (its transport and the device model behind it) refused so far: a value a
/// `Machine.metrics()` or a metrics endpoint can read at any time from any thread.
public struct VirtioErrorSnapshot: Sendable, Equatable, Codable {
    /// The device model, e.g. "virtio-blk".
    public var device: String
    /// Refusals by reason: ring and queue-setup errors from the transport, request errors from the device.
    public var refusals: [String: UInt64]
    /// Warning lines the rate limiter did not write (the counters above still hold every event).
    public var suppressedLogLines: UInt64

    public var total: UInt64 { refusals.values.reduce(0, &+) }
}

extension VirtqueueError {
    /// The counter label of this ring error.
    public var reason: String {
        switch self {
        case .notReady: return "queue_not_ready"
        case .ringOutsideMemory: return "ring_outside_memory"
        case .availableIndexTooFarAhead: return "available_index_too_far_ahead"
        case .descriptorIndexOutOfRange: return "descriptor_index_out_of_range"
        case .chainTooLong: return "descriptor_chain_loops"
        case .bufferOutsideMemory: return "buffer_outside_memory"
        case .zeroLengthBuffer: return "zero_length_buffer"
        case .indirectNotNegotiated: return "indirect_not_negotiated"
        case .readableAfterWritable: return "readable_after_writable"
        case .wrongBufferDirection: return "wrong_buffer_direction"
        }
    }
}
