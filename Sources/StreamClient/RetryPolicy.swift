/// How hard to try one origin before moving to the next. A wrong or short body, a reset, a stall or
/// a 5xx is retried on the same origin (it may be transient); a 404 moves on at once (that origin
/// lacks the object, as a partial mirror may).
public struct RetryPolicy: Sendable {
    public var attemptsPerOrigin: Int
    /// Pause before attempt n+1 on the same origin (last value repeats).
    public var backoffSeconds: [Double]

    public init(attemptsPerOrigin: Int = 3, backoffSeconds: [Double] = [0.05, 0.25, 1.0]) {
        self.attemptsPerOrigin = max(1, attemptsPerOrigin)
        self.backoffSeconds = backoffSeconds
    }

    func backoff(beforeAttempt attempt: Int) -> Double {
        guard attempt > 0, !backoffSeconds.isEmpty else { return 0 }
        return backoffSeconds[min(attempt - 1, backoffSeconds.count - 1)]
    }
}
