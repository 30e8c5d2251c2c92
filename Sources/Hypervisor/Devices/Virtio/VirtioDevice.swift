/// A virtio device model behind a transport (virtio 1.x §5): its identity, features, configuration
/// space and what it does with its queues. The transport owns the queues and negotiation.
public protocol VirtioDevice: AnyObject, Sendable {
    /// Device ID (virtio 1.x §5, e.g. 2 for block).
    var deviceType: UInt32 { get }
    /// Device-specific feature bits; the transport adds VIRTIO_F_VERSION_1.
    var features: UInt64 { get }
    /// Maximum size of each queue; the count is the number of queues.
    var queueMaximumSizes: [UInt16] { get }
    /// Reads device configuration space at `offset` (any width); out-of-range bytes read as 0.
    func readConfiguration(offset: Int, into data: UnsafeMutableRawBufferPointer)
    /// Writes device configuration space; read-only fields ignore writes.
    func writeConfiguration(offset: Int, from data: UnsafeRawBufferPointer)
    /// Serves every available request on queue `index`, calling `completed` after each one is in the
    /// used ring (the transport interrupts then: a request that finished need not wait for a slower
    /// one behind it).
    func processQueue(_ index: Int, queue: inout Virtqueue, memory: GuestMemory,
                      completed: (Virtqueue) -> Void) throws(VirtqueueError)
    /// Forgets negotiated state (device reset, virtio 1.x §2.1.2).
    func reset()
    /// Requests the device refused (answered with an error status), by reason; nil when it counts none.
    var requestRefusals: GuestErrorCounters? { get }
    /// The device model's name in metrics, e.g. "virtio-blk".
    var metricsName: String { get }
    /// The driver's accepted features (FEATURES_OK stuck, or a restored negotiated state). Called
    /// with the transport's locks held: the device must not call back into the transport.
    func featuresAccepted(_ features: UInt64)
    /// The driver notified queue `index` and its run is over; called with no transport lock held, so
    /// the device may call out (virtio-net tells its backend receive buffers arrived).
    func queueNotified(_ index: Int)
}

extension VirtioDevice {
    public func featuresAccepted(_ features: UInt64) {}
    public func queueNotified(_ index: Int) {}
    public var requestRefusals: GuestErrorCounters? { nil }
    public var metricsName: String { "virtio-\(deviceType)" }
}

/// A device's configuration space as fixed bytes (block: capacity and limits; net: MAC and status).
public enum VirtioConfigurationSpace {
    /// Copies the bytes a guest read at `offset` covers; outside `bytes` it reads zeros.
    public static func read(_ bytes: [UInt8], offset: Int, into data: UnsafeMutableRawBufferPointer) {
        for index in 0..<data.count {
            let position = offset + index
            data[index] = position >= 0 && position < bytes.count ? bytes[position] : 0
        }
    }
}

/// Feature bits defined for every device type (virtio 1.x §6).
public enum VirtioFeature {
    /// VIRTIO_F_VERSION_1 (bit 32): the modern interface this transport implements.
    public static let version1: UInt64 = 1 << 32
}

/// Device status bits (virtio 1.x §2.1).
public enum VirtioStatus {
    public static let acknowledge: UInt32 = 1
    public static let driver: UInt32 = 2
    public static let driverOK: UInt32 = 4
    public static let featuresOK: UInt32 = 8
    public static let deviceNeedsReset: UInt32 = 64
    public static let failed: UInt32 = 128
}
