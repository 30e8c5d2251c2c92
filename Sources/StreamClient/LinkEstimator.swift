/// What the fetcher currently believes about the network path. The prefetch scheduler sizes its
/// buffering from these; nil means "not measured yet".
public struct LinkEstimate: Sendable, Equatable {
    /// Delivery rate while transfers were in flight (bytes per second), max-filtered like BBR's
    /// bottleneck-bandwidth estimate, so an idle or half-used link does not lower it.
    public var bandwidthBytesPerSecond: Double?
    /// Minimum request-to-first-byte time over the recent window (propagation plus server time).
    public var rttSeconds: Double?
    /// Smoothed request-to-first-byte time (RFC 6298 style, gain 1/8), which includes queueing.
    public var smoothedRTTSeconds: Double?
    /// Total body bytes received since the fetcher started.
    public var bytesReceived: Int

    public var bandwidthDelayProductBytes: Int? {
        guard let bandwidthBytesPerSecond, let rttSeconds else { return nil }
        return Int(bandwidthBytesPerSecond * rttSeconds)
    }
}

/// Turns byte arrivals and first-byte times into a `LinkEstimate`. A pure value: time is passed in,
/// so tests drive it with made-up clocks.
struct LinkEstimator {
    /// Length of one delivery-rate sample. Long enough to average over many TCP segments, short
    /// enough to react within a second.
    var binSeconds = 0.1
    /// How many recent rate samples the max filter spans (BBR uses about ten round trips).
    var bandwidthWindow = 10
    /// How long an RTT sample stays a candidate for the minimum (BBR's min-RTT window is 10 s).
    var rttWindowSeconds = 10.0
    /// Fraction of a bin that must have bodies arriving for it to give a rate sample: a few
    /// milliseconds, so that a small window (a body or two per bin) is still measured.
    var minimumBusyFraction = 0.05

    private var binStart: Double?
    private var binBytes = 0
    private var binBusySeconds = 0.0
    private var lastTick: Double?
    private var lastBusy = false
    private var rateSamples: [Double] = []
    private var rttSamples: [(time: Double, seconds: Double)] = []
    private var smoothedRTT: Double?
    private(set) var bytesReceived = 0

    /// Records `bytes` arriving at `now`. A body's first slice on an otherwise quiet link marks when
    /// arrival time starts counting, so its bytes took no counted time and are left out of the rate
    /// (they would inflate it); when other bodies were arriving, its bytes shared their time.
    mutating func received(_ bytes: Int, at now: Double, startsBody: Bool = false) {
        bytesReceived += bytes
        if binStart == nil { binStart = now }
        if startsBody && !lastBusy { return }
        binBytes += bytes
    }

    /// Called regularly by the transfer loop with whether any response body is arriving (a transfer
    /// has its first byte and is not finished). Only that time counts: waiting for first bytes and
    /// gaps between requests are not the link's doing, so the rate measured is the bottleneck's
    /// even when the prefetch window lets only a few requests run. Measured as throughput instead,
    /// a small first window would measure a small rate, which keeps the window small.
    mutating func tick(at now: Double, busy: Bool) {
        defer { lastTick = now; lastBusy = busy }
        // The interval counts when a body was arriving at its start (the loop wakes on every arrival).
        if let lastTick, lastBusy { binBusySeconds += now - lastTick }
        guard let start = binStart else {
            if busy { binStart = now }
            return
        }
        guard now - start >= binSeconds else { return }
        // Bins with little arrival time are too noisy (a burst read after the loop was descheduled).
        if binBusySeconds >= (now - start) * minimumBusyFraction, binBytes > 0 {
            rateSamples.append(Double(binBytes) / binBusySeconds)
            if rateSamples.count > bandwidthWindow { rateSamples.removeFirst(rateSamples.count - bandwidthWindow) }
        }
        binStart = busy ? now : nil
        binBytes = 0
        binBusySeconds = 0
    }

    /// Records one request's time from sending to its first response byte. Only requests started
    /// `uncongested` (little in flight ahead of them) are RTT samples; the others include queueing
    /// and only feed the smoothed figure. Samples expire only as new ones arrive, so a long busy
    /// stretch keeps the last clean minimum rather than none.
    mutating func firstByte(after seconds: Double, at now: Double, uncongested: Bool = true) {
        guard seconds > 0, seconds.isFinite else { return }
        if let smoothed = smoothedRTT {
            smoothedRTT = smoothed + (seconds - smoothed) / 8
        } else {
            smoothedRTT = seconds
        }
        guard uncongested else { return }
        rttSamples.append((now, seconds))
        rttSamples.removeAll { now - $0.time > rttWindowSeconds }
    }

    /// The largest recent rate sample, except that with four or more the largest is dropped: one bin
    /// can catch a burst of bytes that waited in the socket while the loop was descheduled (measured:
    /// 30.9 Mbit/s on a 20 Mbit/s link), and the window must not grow on that.
    private var bandwidth: Double? {
        guard rateSamples.count >= 4 else { return rateSamples.max() }
        return rateSamples.sorted(by: >)[1]
    }

    var estimate: LinkEstimate {
        LinkEstimate(bandwidthBytesPerSecond: bandwidth,
                     rttSeconds: rttSamples.map(\.seconds).min(),
                     smoothedRTTSeconds: smoothedRTT,
                     bytesReceived: bytesReceived)
    }
}
