/// How many bytes of prefetch may be in flight. Two goals pull apart: a full pipe needs more than one
/// bandwidth-delay product (BDP) in flight, but every byte in flight beyond one BDP waits in a queue
/// ahead of the next demand miss. So the window is wide (`openBDPs`) while no demand miss is pending
/// or recent, narrows to `pressuredBDPs` as soon as one is pending, stays narrow while misses keep
/// coming (`holdSeconds` after the last one ends), then grows back linearly over `regrowSeconds`.
///
/// The bandwidth is measured through the window itself, so a low first measurement (a handshake
/// counted as busy time, a slow first response) would keep the window too small to ever measure
/// more, and per-request turnaround on a real host (server, proxies, the loop noticing a completion)
/// exceeds the minimum first-byte time the BDP uses. Hence a startup phase, after BBR's: while
/// prefetch is held back by the window, the window doubles every round; three rounds in a row
/// without the rate growing by a quarter mean the link is full. The smallest window that reached
/// the full rate then stays the open window's floor for the fetcher's life.
///
/// A pure value: time is passed in (monotonic seconds), so tests drive it with a made-up clock.
struct PrefetchWindowPolicy {
    /// Window with no demand miss pending or recent. Measured at 100 Mbit/s, 20 ms through the
    /// benchmark's shaping proxy: 1.5 BDP reached 70–80 % of the link, 2.5 BDP 94–99 %; the extra
    /// half covers request granularity (whole chunks) and rate wobble.
    var openBDPs = 3.0
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
    /// Startup: growth that counts as "still growing" (BBR: 25 %), rounds without it that end the
    /// startup (BBR: 3), and a cap. A round lasts two RTTs, at least 0.2 s: the estimator's rate
    /// samples are 100 ms bins, and the rate needs a turnaround to answer a larger window.
    var startupGrowth = 1.25
    var startupFlatRounds = 3
    var minimumRoundSeconds = 0.2
    var roundRTTs = 2.0
    var maximumStartupWindowBytes = 64 << 20

    /// The startup window (doubled every limited round); nil before the first round and after startup.
    private var startupWindowBytes: Int?
    private var startupDone = false
    private var roundStart: Double?
    private var roundWasLimited = false
    private var roundWindowBytes = 0
    private var fullBandwidth = 0.0
    /// The window of the round that last raised `fullBandwidth`: after startup, the open window's floor.
    private(set) var fullRateWindowBytes = 0
    private var flatRounds = 0

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

    /// Whether startup is over (the rate stopped growing while the window held prefetch back).
    var linkIsFull: Bool { startupDone }

    /// Called after each admission: `windowLimited` says whether prefetch was left waiting because
    /// the window was full. During startup, ends rounds and doubles the window after each limited one.
    mutating func admitted(windowLimited: Bool, window: Int, link: LinkEstimate, at now: Double) {
        guard !startupDone, let bandwidth = link.bandwidthBytesPerSecond, let rtt = link.rttSeconds else { return }
        guard let start = roundStart else {
            roundStart = now
            startupWindowBytes = max(unmeasuredWindowBytes, window)
            return
        }
        if windowLimited { roundWasLimited = true }
        roundWindowBytes = max(roundWindowBytes, window)
        guard now - start >= max(minimumRoundSeconds, roundRTTs * rtt) else { return }
        let limited = roundWasLimited, used = roundWindowBytes
        roundStart = now
        roundWasLimited = false
        roundWindowBytes = 0
        // Rounds in which the window did not hold prefetch back (or a miss narrowed it) say nothing about the link.
        guard limited, !underPressure else { return }
        if bandwidth >= fullBandwidth * startupGrowth {
            fullBandwidth = bandwidth
            fullRateWindowBytes = used
            flatRounds = 0
        } else {
            flatRounds += 1
        }
        if flatRounds >= startupFlatRounds {
            startupDone = true
            startupWindowBytes = nil
        } else {
            startupWindowBytes = min(maximumStartupWindowBytes, 2 * max(used, startupWindowBytes ?? 0))
        }
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
        let window = max(minimumWindowBytes, Int(bandwidth * rtt * bdps))
        // Misses narrow the window in any phase; otherwise startup's doubling, then the smallest
        // window that reached the full rate, are floors for it.
        guard !underPressure else { return window }
        return max(window, startupWindowBytes ?? 0, startupDone ? fullRateWindowBytes : 0)
    }
}
