/// What one device has done since the machine was created, for `Machine.metrics()`.
public struct DeviceCounters: Sendable, Equatable, Codable {
    /// Requests served: guest register accesses for a plain bus device, queue requests for virtio.
    public var requests: UInt64 = 0
    /// Bytes moved to the guest (register reads; for a disk, bytes read from the backend).
    public var bytesRead: UInt64 = 0
    /// Bytes moved from the guest (register writes; for a disk, bytes written to the backend).
    public var bytesWritten: UInt64 = 0
    /// Requests that failed (a disk's I/O errors and refused requests).
    public var errors: UInt64 = 0
    /// Seconds requests were held back by a rate or latency limit (a disk's `DiskThrottle`); nil
    /// for a device without one.
    public var throttledSeconds: Double?

    public init(requests: UInt64 = 0, bytesRead: UInt64 = 0, bytesWritten: UInt64 = 0, errors: UInt64 = 0, throttledSeconds: Double? = nil) {
        self.requests = requests
        self.bytesRead = bytesRead
        self.bytesWritten = bytesWritten
        self.errors = errors
        self.throttledSeconds = throttledSeconds
    }
}

/// A device that counts its own work in its own terms (virtio-blk counts disk requests and bytes
/// rather than register accesses).
public protocol DeviceMetricsSource: AnyObject, Sendable {
    var counters: DeviceCounters { get }
}

/// One device's line in `MachineMetrics`.
public struct DeviceMetrics: Sendable, Equatable, Codable {
    /// The id the device was registered under (`serial0`, `virtio-blk0`, ...).
    public var name: String
    public var counters: DeviceCounters
    /// Guest-triggered refusals by reason (malformed rings, bad requests); empty for devices that
    /// do not count them. A guest that keeps sending bad requests shows up here, not in the log.
    public var guestErrors: [String: UInt64] = [:]
}

/// A device that counts what the guest got wrong and rate-limits its warnings about it.
protocol GuestErrorSource: AnyObject, Sendable {
    func guestErrorCounts() -> [String: UInt64]
    func flushWarnings()
}

/// Counts a bus device's register traffic for devices that do not count their own work.
final class MeteredBusDevice: BusDevice, DeviceMetricsSource {
    let device: any BusDevice
    private let state = Locked(DeviceCounters())

    init(_ device: any BusDevice) {
        self.device = device
    }

    var counters: DeviceCounters { state.withLock { $0 } }

    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        device.read(offset: offset, into: data)
        state.withLock {
            $0.requests += 1
            $0.bytesRead += UInt64(data.count)
        }
    }

    func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        device.write(offset: offset, from: data)
        state.withLock {
            $0.requests += 1
            $0.bytesWritten += UInt64(data.count)
        }
    }
}
