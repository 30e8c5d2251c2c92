import Glibc

/// Where a dilated clock reads host time; injected so tests drive time by hand.
public protocol HostTimeSource: Sendable {
    /// Monotonic host time in nanoseconds from an arbitrary origin.
    func nanoseconds() -> UInt64
}

/// The host's CLOCK_MONOTONIC: never steps back, unaffected by wall-clock changes.
public struct MonotonicHostTime: HostTimeSource {
    public init() {}

    public func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
