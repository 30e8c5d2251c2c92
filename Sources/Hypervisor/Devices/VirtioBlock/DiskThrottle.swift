import Foundation
import Synchronization

/// Limits the host holds one virtio-blk device to: a byte rate and a service time per request.
/// Why: appliances on one host share its disks, and a time-dilated guest perceives the host's disk
/// TDF times faster unless its device is held to rate ÷ TDF (Dilation's `DilatedDisk`, DieCast's
/// disk scaling).
public struct DiskLimit: Sendable, Equatable {
    /// Bytes read or written per second (nil: no rate limit).
    public var bytesPerSecond: UInt64?
    /// Added to every request before it completes (a slower disk's service time).
    public var requestLatencySeconds: Double

    public init(bytesPerSecond: UInt64?, requestLatencySeconds: Double = 0) {
        self.bytesPerSecond = bytesPerSecond
        self.requestLatencySeconds = requestLatencySeconds
    }

    /// No rate and no latency: nothing to enforce.
    public var isUnlimited: Bool { bytesPerSecond == nil && requestLatencySeconds <= 0 }
}

/// Enforces a `DiskLimit` on the thread that serves the device's queue: after each request is
/// served and before it completes, the thread waits until a token bucket (refilled at the rate,
/// holding at most `burstBytes`) has paid for the request's bytes, plus the request latency. The
/// guest sees later completions, never an error. A request waits at most its own bytes ÷ rate plus
/// the latency, so pausing the machine waits for at most one such request.
public final class DiskThrottle: Sendable {
    public let limit: DiskLimit
    /// Bytes the bucket holds when full: a short burst after idling is served at once.
    public let burstBytes: Double
    private let now: @Sendable () -> Double
    private let sleep: @Sendable (Double) -> Void
    /// Tokens (bytes, negative while in debt), when they were last counted, and the total waited.
    private let state: Mutex<(tokens: Double, at: Double, waited: Double)>

    /// `now` (seconds, monotonic) and `sleep` are the real clock unless a test gives its own.
    public init(_ limit: DiskLimit, burstBytes: Int = 64 << 10,
                now: @escaping @Sendable () -> Double = DiskThrottle.monotonicSeconds,
                sleep: @escaping @Sendable (Double) -> Void = DiskThrottle.sleepSeconds) {
        self.limit = limit
        self.burstBytes = Double(burstBytes)
        self.now = now
        self.sleep = sleep
        state = Mutex((Double(burstBytes), now(), 0))
    }

    /// Seconds this device's requests have been held back in all, for metrics and tests.
    public var waitedSeconds: Double { state.withLock { $0.waited } }

    /// Charges a served request of `bytes` and waits as long as the limit says; returns the wait.
    @discardableResult
    public func charge(bytes: Int) -> Double {
        let wait = state.withLock { state -> Double in
            var wait = limit.requestLatencySeconds
            if let rate = limit.bytesPerSecond.map({ Double($0) }), rate > 0 {
                let time = now()
                state.tokens = min(burstBytes, state.tokens + (time - state.at) * rate) - Double(bytes)
                state.at = time
                if state.tokens < 0 { wait += -state.tokens / rate }
            }
            state.waited += max(wait, 0)
            return wait
        }
        if wait > 0 { sleep(wait) }
        return wait
    }

    public static func monotonicSeconds() -> Double { Double(MonotonicClock.nanoseconds()) / 1e9 }

    public static func sleepSeconds(_ seconds: Double) {
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}
