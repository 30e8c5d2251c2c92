/// How many bytes of prefetch may be in flight. Two goals pull apart: a full pipe needs more than one
/// bandwidth-delay product (BDP) in flight, but every byte in flight beyond one BDP waits in a queue
/// ahead of the next demand miss. So the window is wide (`openBDPs`) while no demand miss is pending
/// or recent, narrows to `pressuredBDPs` as soon as one is pending, stays narrow while misses keep
/// coming (`holdSeconds` after the last one ends), then grows back linearly over `regrowSeconds`.
///
/// A pure value: time is passed in (monotonic seconds), so tests drive it with a made-up clock.
struct PrefetchWindowPolicy {
    /// Window with no demand miss pending or recent. Measured at 100 Mbit/s, 20 ms through the
    /// benchmark's shaping proxy (outstanding bytes counted): 2 and 3 BDP both reached 97–98 % of
    /// the link; every BDP above one is queue the first miss of a burst waits behind.
    var openBDPs = 2.5
    /// Window while demand misses happen: a miss then queues behind at most about this much minus the
    /// one BDP on the wire, so it completes in about one RTT plus its own transfer (goal: 2 RTT + chunk).
    var pressuredBDPs = 1.0
    /// A guest faults in bursts (boot phases, a program starting); misses closer together than this
    /// count as one burst, so the window does not reopen between them.
    var holdSeconds = 0.5
    /// The hold lasts at least this many round trips on long paths.
    var holdRTTs = 8.0
    /// Growing back takes at least this long, and at least `regrowRTTs` round trips, so a new burst
    /// soon after the last one still finds a moderate queue.
    var regrowSeconds = 0.25
    var regrowRTTs = 8.0
    /// Window before bandwidth and RTT are measured.
    var unmeasuredWindowBytes = 256 * 1024
    /// Smallest window on a measured path (a couple of chunks), so prefetch always moves.
    var minimumWindowBytes = 64 * 1024

    private var demandPending = false
    /// When the last demand miss ended; nil while pending or when none happened yet.
    private var lastDemandEnd: Double?
    /// The bandwidth measured when misses began. A narrowed window cannot fill the link, so the rate
    /// measured under pressure understates it; without this floor the window would shrink with it.
    private var bandwidthBeforePressure: Double?

    /// Whether a demand miss is pending or recent enough that the window is not fully open.
    private var underPressure: Bool { demandPending || lastDemandEnd != nil }

    /// Tells the policy whether any demand request is queued or in flight at `now`.
    mutating func observe(demandPending pending: Bool, link: LinkEstimate, at now: Double) {
        if pending && !demandPending {
            if !underPressure || bandwidthBeforePressure == nil {
                bandwidthBeforePressure = link.bandwidthBytesPerSecond
            }
            lastDemandEnd = nil
        } else if !pending && demandPending {
            lastDemandEnd = now
        }
        demandPending = pending
    }

    /// The window, in BDPs, at `now` for a path with round trip `rttSeconds`.
    func windowInBDPs(at now: Double, rttSeconds: Double) -> Double {
        if demandPending { return pressuredBDPs }
        guard let end = lastDemandEnd else { return openBDPs }
        let hold = max(holdSeconds, holdRTTs * rttSeconds)
        let regrow = max(regrowSeconds, regrowRTTs * rttSeconds)
        let since = now - end - hold
        if since <= 0 { return pressuredBDPs }
        return pressuredBDPs + (openBDPs - pressuredBDPs) * min(1, since / regrow)
    }

    /// The prefetch window in bytes at `now`.
    mutating func windowBytes(link: LinkEstimate, at now: Double) -> Int {
        guard let measured = link.bandwidthBytesPerSecond, let rtt = link.rttSeconds else { return unmeasuredWindowBytes }
        let bdps = windowInBDPs(at: now, rttSeconds: rtt)
        if !demandPending, lastDemandEnd != nil, bdps >= openBDPs {
            // Fully open again: the burst is over, and so is its bandwidth floor.
            lastDemandEnd = nil
            bandwidthBeforePressure = nil
        }
        let bandwidth = underPressure ? max(measured, bandwidthBeforePressure ?? 0) : measured
        return max(minimumWindowBytes, Int(bandwidth * rtt * bdps))
    }
}
