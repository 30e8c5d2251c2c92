import Logging
import Synchronization

/// Log lines about hostile or broken clients, at most one per reason per `interval`: a client that
/// opens thousands of connections must not be able to fill the operator's disk or drown other
/// lines. Every event is still counted in the metrics; the line says how many were not logged.
final class RateLimitedLog: Sendable {
    private let logger: Logger
    private let interval: Duration
    private let last = Mutex<[String: (at: ContinuousClock.Instant, suppressed: Int)]>([:])

    init(logger: Logger, interval: Duration = .seconds(10)) {
        self.logger = logger
        self.interval = interval
    }

    func notice(_ reason: String, _ message: @autoclosure () -> String, metadata: Logger.Metadata = [:]) {
        guard logger.logLevel <= .notice else { return }
        let now = ContinuousClock.now
        let suppressed: Int? = last.withLock { last in
            if let previous = last[reason], now - previous.at < interval {
                last[reason] = (previous.at, previous.suppressed + 1)
                return nil
            }
            let count = last[reason]?.suppressed ?? 0
            last[reason] = (now, 0)
            return count
        }
        guard let suppressed else { return }
        var metadata = metadata
        metadata["reason"] = "\(reason)"
        if suppressed > 0 { metadata["not_logged_since_last"] = "\(suppressed)" }
        logger.notice("\(message())", metadata: metadata)
    }
}
