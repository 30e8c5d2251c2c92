/// The rate limit of a port's link as a virtual clock (a token bucket of depth `burstBytes`): each
/// frame gets the time it finishes leaving the link, computed from the time it arrived and the
/// frames before it. The delay line then releases it `latency` later. Because departure times are
/// computed, not slept for, the achieved rate does not depend on how late the switch thread wakes.
struct LinkPacer {
    private let nanosecondsPerByte: Double
    private let burstNanoseconds: Double
    /// When the link is free again (fractional ns, so rounding never accumulates).
    private var freeAt: Double = 0

    init(rateBitsPerSecond: UInt64?, burstBytes: Int) {
        if let rate = rateBitsPerSecond {
            nanosecondsPerByte = 8e9 / Double(rate)
            burstNanoseconds = Double(burstBytes) * 8e9 / Double(rate)
        } else {
            nanosecondsPerByte = 0
            burstNanoseconds = 0
        }
    }

    /// The time (monotonic ns) `length` bytes that arrived at `now` have left the link.
    mutating func departure(length: Int, arrival now: UInt64) -> UInt64 {
        guard nanosecondsPerByte > 0 else { return now }
        // An idle link saves up at most one burst: the frame may start that much "in the past".
        let start = max(freeAt, Double(now) - burstNanoseconds)
        freeAt = start + Double(length) * nanosecondsPerByte
        return max(now, UInt64(freeAt))
    }
}
