import Catalog
import Foundation
import Logging

/// Relearns an appliance's model after new traces arrive (`streamvm serve --learn-key`). Traces come
/// in bursts (many clients finishing at once), so learning waits until no new trace of that
/// appliance arrived for `quietSeconds`, then runs once for the whole burst, off the event loops.
public final class LearningTrigger: @unchecked Sendable {
    /// Pause after the last trace before learning (long enough to batch a burst of uploads).
    public static let defaultQuietSeconds = 2.0

    private let publisher: ModelPublisher
    private let quietSeconds: Double
    private let afterPublish: @Sendable () -> Void
    private let logger: Logger
    private let lock = NSLock()
    private var generation: [String: Int] = [:]
    private let queue = DispatchQueue(label: "streamvm.learning")

    /// `afterPublish` runs after a new catalog.json was written (the server drops its cached copy).
    public init(publisher: ModelPublisher, quietSeconds: Double = LearningTrigger.defaultQuietSeconds,
                afterPublish: @escaping @Sendable () -> Void, logger: Logger) {
        self.publisher = publisher
        self.quietSeconds = quietSeconds
        self.afterPublish = afterPublish
        self.logger = logger
    }

    /// A trace of `appliance` was stored.
    public func traceStored(appliance: String) {
        let ticket = lock.withLock { () -> Int in
            generation[appliance, default: 0] += 1
            return generation[appliance]!
        }
        queue.asyncAfter(deadline: .now() + quietSeconds) { [self] in
            // Only the last trace of a burst learns.
            guard lock.withLock({ generation[appliance] == ticket }) else { return }
            do {
                let report = try publisher.learn(appliance: appliance)
                if report.published { afterPublish() }
            } catch {
                logger.warning("learning after new traces failed", metadata: ["appliance": "\(appliance)", "error": "\(error)"])
            }
        }
    }
}
