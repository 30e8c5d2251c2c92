import Hypervisor

/// A disk as a dilated guest should perceive it, and the limit the host must hold its virtio-blk
/// devices to: a guest that sees time run `factor` times slow sees `factor` times the bytes per
/// second and every service time `factor` times shorter, so the host allows rate ÷ TDF and adds
/// latency × TDF (DieCast's disk scaling, as `DilatedLink` does for the network).
public struct DilatedDisk: Sendable, Equatable {
    /// What the guest should perceive (nil rate: unlimited).
    public var perceivedBytesPerSecond: UInt64?
    public var perceivedLatencyMilliseconds: Double
    public let factor: DilationFactor

    public init(perceivedBytesPerSecond: UInt64?, perceivedLatencyMilliseconds: Double = 0, factor: DilationFactor) {
        self.perceivedBytesPerSecond = perceivedBytesPerSecond
        self.perceivedLatencyMilliseconds = perceivedLatencyMilliseconds
        self.factor = factor
    }

    /// The limit each of the machine's disks gets (never below 1 byte/s).
    public var realLimit: DiskLimit {
        DiskLimit(bytesPerSecond: perceivedBytesPerSecond.map { UInt64(max(1, (Double($0) / factor.value).rounded())) },
                  requestLatencySeconds: perceivedLatencyMilliseconds * factor.value / 1000)
    }
}
