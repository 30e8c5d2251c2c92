import Glibc
import Hypervisor

/// How one switch port behaves: whose port it is and the link it models. Rates are in bits per
/// second and latencies in milliseconds, as a user states them for a link.
public struct PortConfiguration: Sendable, Equatable {
    /// The port's name in counters and logs (usually the appliance's).
    public var name: String
    /// The guest's MAC: frames from another source are dropped (`spoofedSource`). nil makes an
    /// uplink port (e.g. a tap to the host) that may carry any source and is learned like one.
    public var mac: MACAddress?
    /// Rate of the link out of this port's guest, bits/s; nil for no limit.
    public var rateBitsPerSecond: UInt64?
    /// One-way latency added to every frame the guest sends, milliseconds.
    public var latencyMilliseconds: Double
    /// How many bytes the rate limiter lets through back to back after an idle period.
    public var burstBytes: Int
    /// Frames and bytes a direction of the port may hold: sent frames waiting for the rate limit or
    /// in the delay line, and (shared fairly among senders) frames waiting for the guest's receive
    /// buffers. Beyond either limit new frames are dropped (tail drop).
    public var queueLimitFrames: Int
    public var queueLimitBytes: Int
    /// Largest frame without segmentation offload.
    public var maximumFrameLength: Int
    /// The endpoint takes frames with offload metadata (the guest negotiated checksum and
    /// segmentation offloads, or a tap with a vnet header). Otherwise the switch finishes checksums
    /// and segments large TCP frames before delivery.
    public var acceptsOffloads: Bool

    public init(name: String, mac: MACAddress?, rateBitsPerSecond: UInt64? = nil, latencyMilliseconds: Double = 0,
                burstBytes: Int = EthernetFrame.maximumOffloadLength, queueLimitFrames: Int = 1024, queueLimitBytes: Int = 4 << 20,
                maximumFrameLength: Int = EthernetFrame.defaultMaximumLength, acceptsOffloads: Bool = false) {
        self.name = name
        self.mac = mac
        self.rateBitsPerSecond = rateBitsPerSecond
        self.latencyMilliseconds = latencyMilliseconds
        self.burstBytes = burstBytes
        self.queueLimitFrames = queueLimitFrames
        self.queueLimitBytes = queueLimitBytes
        self.maximumFrameLength = maximumFrameLength
        self.acceptsOffloads = acceptsOffloads
    }

    /// Checks values a user or appliance.json gave; the message names the field.
    public func validate() throws(NetworkError) {
        if let rate = rateBitsPerSecond, rate < 8_000 { throw .invalidConfiguration("port \(name): rateBitsPerSecond \(rate) is below 8000") }
        guard latencyMilliseconds.isFinite, latencyMilliseconds >= 0, latencyMilliseconds <= 60_000 else {
            throw .invalidConfiguration("port \(name): latencyMilliseconds \(latencyMilliseconds) is not within 0...60000")
        }
        guard queueLimitFrames >= 1, queueLimitBytes >= maximumFrameLength else {
            throw .invalidConfiguration("port \(name): queue limits (\(queueLimitFrames) frames, \(queueLimitBytes) bytes) hold less than one frame")
        }
        guard maximumFrameLength >= EthernetFrame.headerLength + 46, maximumFrameLength <= EthernetFrame.maximumOffloadLength else {
            throw .invalidConfiguration("port \(name): maximumFrameLength \(maximumFrameLength) is not within 60...\(EthernetFrame.maximumOffloadLength)")
        }
        guard burstBytes >= 1 else { throw .invalidConfiguration("port \(name): burstBytes must be positive") }
        if let mac, mac.isMulticast { throw .invalidConfiguration("port \(name): MAC \(mac) is a multicast address") }
    }
}

/// Errors of the Network module; each message names what was wrong.
public enum NetworkError: Error, CustomStringConvertible, Equatable {
    case invalidConfiguration(String)
    case duplicatePort(String)
    case system(call: String, errno: Int32)
    case switchStopped

    public var description: String {
        switch self {
        case .invalidConfiguration(let message): message
        case .duplicatePort(let message): message
        case .system(let call, let errno): "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case .switchStopped: "the switch is stopped"
        }
    }
}
