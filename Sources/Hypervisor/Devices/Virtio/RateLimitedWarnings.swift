import Logging
import Synchronization

/// Writes at most `burst` warning lines per `interval`; the rest are counted, and the first warning
/// after an interval in which some were held back starts with one summary line saying how many.
/// A guest that sends bad requests in a loop thus costs a bounded number of log lines per minute
/// (the exact numbers are in `GuestErrorCounters`), not one line per request.
public final class RateLimitedWarnings: Sendable {
    public struct Policy: Sendable {
        /// Lines written in full per interval: enough to show what a misbehaving driver does.
        public var burst: Int
        public var interval: Duration

        /// 10 lines a minute: a driver bug still shows its first errors at once, while a guest in a
        /// loop (1,673 lines in five minutes in issue #15's measurement) costs at most 11 a minute.
        public static let standard = Policy(burst: 10, interval: .seconds(60))

        public init(burst: Int, interval: Duration) {
            self.burst = burst
            self.interval = interval
        }
    }

    private struct Window {
        var start: ContinuousClock.Instant
        var written = 0
        var held = 0
        var heldTotal: UInt64 = 0
    }

    private let logger: Logger
    private let policy: Policy
    private let now: @Sendable () -> ContinuousClock.Instant
    private let window: Mutex<Window>

    /// `now` is the clock (tests pass their own).
    public init(logger: Logger, policy: Policy = .standard,
                now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.logger = logger
        self.policy = policy
        self.now = now
        self.window = Mutex(Window(start: now()))
    }

    /// Lines held back so far.
    public var suppressed: UInt64 { window.withLock { $0.heldTotal } }

    public func warning(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata? = nil) {
        let (write, summary) = window.withLock { window -> (Bool, (held: Int, seconds: Double)?) in
            let time = now()
            var summary: (held: Int, seconds: Double)?
            if time - window.start >= policy.interval {
                if window.held > 0 { summary = (window.held, Self.seconds(time - window.start)) }
                window = Window(start: time, heldTotal: window.heldTotal)
            }
            guard window.written < policy.burst else {
                window.held += 1
                window.heldTotal += 1
                return (false, summary)
            }
            window.written += 1
            return (true, summary)
        }
        if let summary { logSummary(summary) }
        if write { logger.warning(message(), metadata: metadata()) }
    }

    /// Writes the summary of warnings held back in the current interval, if any (when a device is
    /// reset or a machine stops, so the last interval is accounted for in the log too).
    public func flush() {
        let summary = window.withLock { window -> (held: Int, seconds: Double)? in
            guard window.held > 0 else { return nil }
            let time = now()
            defer { window = Window(start: time, heldTotal: window.heldTotal) }
            return (window.held, Self.seconds(time - window.start))
        }
        if let summary { logSummary(summary) }
    }

    private func logSummary(_ summary: (held: Int, seconds: Double)) {
        logger.warning("suppressed similar warnings", metadata: [
            "suppressed": "\(summary.held)", "seconds": "\(Int(summary.seconds.rounded()))",
        ])
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
