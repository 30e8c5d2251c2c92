import Testing
@testable import StreamClient

/// The adaptive prefetch window, driven by a made-up clock (seconds passed in).
@Suite struct PrefetchWindowPolicyTests {
    /// 100 Mbit/s and 20 ms: one bandwidth-delay product is 250 kB.
    private let link = LinkEstimate(bandwidthBytesPerSecond: 12_500_000, rttSeconds: 0.020, bytesReceived: 0)
    private let bdp = 250_000.0

    private func bdps(_ policy: inout PrefetchWindowPolicy, at now: Double, link: LinkEstimate? = nil) -> Double {
        Double(policy.windowBytes(link: link ?? self.link, at: now)) / bdp
    }

    @Test func wideWithoutDemandMisses() {
        var policy = PrefetchWindowPolicy()
        policy.observe(demandPending: false, link: link, at: 0)
        #expect(bdps(&policy, at: 0) == policy.openBDPs)
        #expect(bdps(&policy, at: 100) == policy.openBDPs)
        #expect(policy.openBDPs >= 2.5)
    }

    @Test func unmeasuredLinkGetsTheStartingWindow() {
        var policy = PrefetchWindowPolicy()
        #expect(policy.windowBytes(link: LinkEstimate(bytesReceived: 0), at: 0) == policy.unmeasuredWindowBytes)
    }

    @Test func narrowsAtOnceWhileAMissIsPendingThenHoldsThenGrowsBack() {
        var policy = PrefetchWindowPolicy()
        policy.observe(demandPending: true, link: link, at: 10)
        #expect(bdps(&policy, at: 10) == policy.pressuredBDPs)
        #expect(bdps(&policy, at: 10.05) == policy.pressuredBDPs)
        policy.observe(demandPending: false, link: link, at: 10.1)
        // Still narrow during the hold: the next miss of a burst must not wait behind a full pipe.
        #expect(bdps(&policy, at: 10.1 + policy.holdSeconds / 2) == policy.pressuredBDPs)
        #expect(bdps(&policy, at: 10.1 + policy.holdSeconds) == policy.pressuredBDPs)
        // Then it grows back, never shrinking on the way, and ends fully open.
        var previous = policy.pressuredBDPs
        var grewInBetween = false
        var now = 10.1 + policy.holdSeconds
        while now < 10.1 + policy.holdSeconds + policy.regrowSeconds + 0.05 {
            now += 0.01
            let current = bdps(&policy, at: now)
            #expect(current >= previous)
            if current > policy.pressuredBDPs && current < policy.openBDPs { grewInBetween = true }
            previous = current
        }
        #expect(grewInBetween)
        #expect(bdps(&policy, at: now) == policy.openBDPs)
    }

    @Test func missesInABurstKeepTheWindowNarrow() {
        var policy = PrefetchWindowPolicy()
        var now = 0.0
        for _ in 0..<10 {
            policy.observe(demandPending: true, link: link, at: now)
            now += 0.05
            #expect(bdps(&policy, at: now) == policy.pressuredBDPs)
            policy.observe(demandPending: false, link: link, at: now)
            // The next miss comes before the hold ends.
            now += policy.holdSeconds * 0.8
            #expect(bdps(&policy, at: now) == policy.pressuredBDPs)
        }
        // The hold counts from the end of the last miss, not the first.
        #expect(bdps(&policy, at: now + policy.holdSeconds * 0.1) == policy.pressuredBDPs)
        #expect(bdps(&policy, at: now + 10) == policy.openBDPs)
    }

    @Test func holdAndRegrowScaleWithTheRoundTrip() {
        // 600 ms RTT (a satellite path): eight round trips are far longer than the fixed hold.
        let slow = LinkEstimate(bandwidthBytesPerSecond: 1_000_000, rttSeconds: 0.6, bytesReceived: 0)
        var policy = PrefetchWindowPolicy()
        policy.observe(demandPending: true, link: slow, at: 0)
        policy.observe(demandPending: false, link: slow, at: 1)
        let hold = policy.holdRTTs * 0.6
        #expect(hold > policy.holdSeconds)
        let narrow = policy.windowBytes(link: slow, at: 1 + hold - 0.1)
        #expect(Double(narrow) == (1_000_000 * 0.6 * policy.pressuredBDPs).rounded(.down))
        let later = policy.windowBytes(link: slow, at: 1 + hold + policy.regrowRTTs * 0.6 + 0.1)
        #expect(Double(later) == (1_000_000 * 0.6 * policy.openBDPs).rounded(.down))
    }

    @Test func rateMeasuredUnderPressureDoesNotShrinkTheWindowFurther() {
        var policy = PrefetchWindowPolicy()
        _ = policy.windowBytes(link: link, at: 0)
        policy.observe(demandPending: true, link: link, at: 1)
        // The narrowed window leaves the link partly idle, so the measured rate falls.
        let underfilled = LinkEstimate(bandwidthBytesPerSecond: 6_000_000, rttSeconds: 0.020, bytesReceived: 0)
        #expect(bdps(&policy, at: 2, link: underfilled) == policy.pressuredBDPs)
        policy.observe(demandPending: false, link: underfilled, at: 3)
        #expect(bdps(&policy, at: 3.1, link: underfilled) == policy.pressuredBDPs)
        // Once the window has fully reopened, the floor is gone and the measurement counts again.
        let reopened = Double(policy.windowBytes(link: underfilled, at: 20))
        #expect(reopened == (6_000_000 * 0.020 * policy.openBDPs).rounded(.down))
    }

    @Test func neverBelowTheMinimum() {
        let tiny = LinkEstimate(bandwidthBytesPerSecond: 100_000, rttSeconds: 0.001, bytesReceived: 0)
        var policy = PrefetchWindowPolicy()
        policy.observe(demandPending: true, link: tiny, at: 0)
        #expect(policy.windowBytes(link: tiny, at: 0) == policy.minimumWindowBytes)
    }

    // MARK: through the scheduler

    private func id(_ value: UInt64) -> RequestID { RequestID(value: value) }

    @Test func schedulerAdmitsLessPrefetchWhileADemandMissIsInFlight() {
        var scheduler = FetchScheduler()
        scheduler.window.openBDPs = 3
        // 50 kB requests: the open window (3 BDP = 750 kB) admits 15, a 1-BDP window 5.
        for n in 1...200 { scheduler.enqueue(id(UInt64(n)), priority: .prefetch(rank: Double(n)), weightBytes: 50_000) }
        let open = scheduler.admit(link: link, now: 0)
        #expect(open.count == 15)
        // A demand miss arrives; it starts at once, and prefetch stops until the bytes in flight
        // (including the miss's own) fit in one BDP.
        scheduler.enqueue(id(1000), priority: .demand, weightBytes: 50_000)
        #expect(scheduler.admit(link: link, now: 1) == [id(1000)])
        for started in open { scheduler.finished(started, link: link, now: 1.01) }
        let narrow = scheduler.admit(link: link, now: 1.01)
        #expect(narrow.count == 4)
        // The miss completes; during the hold prefetch stays at one BDP.
        scheduler.finished(id(1000), link: link, now: 1.02)
        for started in narrow { scheduler.finished(started, link: link, now: 1.03) }
        #expect(scheduler.admit(link: link, now: 1.03).count == 5)
        // Well after the burst the window is wide again.
        let later = scheduler.admit(link: link, now: 5)
        #expect(later.count == 10)
        #expect(scheduler.prefetchBytesInFlight == 750_000)
    }

    @Test func demandWithoutPrefetchAroundDoesNotNarrowTheWindow() {
        var scheduler = FetchScheduler()
        scheduler.window.openBDPs = 3
        // Loading the catalogue before any prefetch: nothing competes with it.
        scheduler.enqueue(id(500), priority: .demand, weightBytes: 10_000)
        #expect(scheduler.admit(link: link, now: 0) == [id(500)])
        scheduler.finished(id(500), link: link, now: 0.05)
        for n in 1...200 { scheduler.enqueue(id(UInt64(n)), priority: .prefetch(rank: Double(n)), weightBytes: 50_000) }
        #expect(scheduler.admit(link: link, now: 0.06).count == 15)
    }

    @Test func promotedPrefetchCountsAsADemandMiss() {
        var scheduler = FetchScheduler()
        scheduler.window.openBDPs = 3
        for n in 1...200 { scheduler.enqueue(id(UInt64(n)), priority: .prefetch(rank: Double(n)), weightBytes: 50_000) }
        #expect(scheduler.admit(link: link, now: 0).count == 15)
        // A reader waits for a queued prefetch: it becomes demand and narrows the window.
        scheduler.reprioritize(id(100), to: .demand)
        #expect(scheduler.admit(link: link, now: 1) == [id(100)])
        #expect(scheduler.isDemandPending)
        for n in 1...15 { scheduler.finished(id(UInt64(n)), link: link, now: 1.01) }
        #expect(scheduler.admit(link: link, now: 1.01).count == 4)
    }
}
