import Testing
@testable import StreamClient

@Suite struct FetchSchedulerTests {
    private func id(_ value: UInt64) -> RequestID { RequestID(value: value) }
    private let unmeasured = LinkEstimate(bytesReceived: 0)

    @Test func demandStartsBeforeEarlierPrefetch() {
        var scheduler = FetchScheduler()
        scheduler.window.unmeasuredWindowBytes = 100
        scheduler.enqueue(id(1), priority: .prefetch(rank: 0), weightBytes: 60)
        scheduler.enqueue(id(2), priority: .prefetch(rank: 1), weightBytes: 60)
        scheduler.enqueue(id(3), priority: .demand, weightBytes: 60)
        let started = scheduler.admit(link: unmeasured, now: 0)
        #expect(started.first == id(3))
        // The demand's bytes occupy the window, but one prefetch may always run.
        #expect(started == [id(3), id(1)])
    }

    @Test func prefetchLeavesSlotsForDemand() {
        var scheduler = FetchScheduler()
        scheduler.maximumInFlight = 10
        scheduler.demandReserve = 2
        scheduler.window.unmeasuredWindowBytes = 1 << 30
        for n in 1...20 { scheduler.enqueue(id(UInt64(n)), priority: .prefetch(rank: Double(n)), weightBytes: 10) }
        #expect(scheduler.admit(link: unmeasured, now: 0).count == 8)
        scheduler.enqueue(id(100), priority: .demand, weightBytes: 10)
        scheduler.enqueue(id(101), priority: .demand, weightBytes: 10)
        #expect(scheduler.admit(link: unmeasured, now: 0) == [id(100), id(101)])
        scheduler.finished(id(100), link: unmeasured, now: 0)
        // A freed slot inside the reserve does not go back to prefetch while the reserve is in use.
        #expect(scheduler.admit(link: unmeasured, now: 0).isEmpty)
    }

    @Test func prefetchWaitsWhileDemandIsQueued() {
        var scheduler = FetchScheduler()
        scheduler.maximumInFlight = 1
        scheduler.enqueue(id(1), priority: .demand, weightBytes: 10)
        scheduler.enqueue(id(2), priority: .demand, weightBytes: 10)
        scheduler.enqueue(id(3), priority: .prefetch(rank: 0), weightBytes: 10)
        #expect(scheduler.admit(link: unmeasured, now: 0) == [id(1)])
        scheduler.finished(id(1), link: unmeasured, now: 0)
        #expect(scheduler.admit(link: unmeasured, now: 0) == [id(2)])
        scheduler.finished(id(2), link: unmeasured, now: 0)
        #expect(scheduler.admit(link: unmeasured, now: 0) == [id(3)])
    }

    @Test func prefetchWindowFollowsBandwidthDelayProduct() {
        var scheduler = FetchScheduler()
        scheduler.window.minimumWindowBytes = 1000
        scheduler.window.unmeasuredWindowBytes = 1000
        scheduler.window.openBDPs = 1.0
        for n in 1...100 { scheduler.enqueue(id(UInt64(n)), priority: .prefetch(rank: Double(n)), weightBytes: 1000) }
        // 1 MB/s × 10 ms = 10 kB window: ten 1 kB requests.
        let link = LinkEstimate(bandwidthBytesPerSecond: 1_000_000, rttSeconds: 0.010, bytesReceived: 0)
        #expect(scheduler.admit(link: link, now: 0).count == 10)
        #expect(scheduler.prefetchBytesInFlight == 10_000)
        #expect(scheduler.admit(link: link, now: 0).isEmpty)
        scheduler.finished(id(1), link: link, now: 0)
        #expect(scheduler.admit(link: link, now: 0) == [id(11)])
        // A faster link widens the window.
        let faster = LinkEstimate(bandwidthBytesPerSecond: 2_000_000, rttSeconds: 0.010, bytesReceived: 0)
        #expect(scheduler.admit(link: faster, now: 0).count == 10)
    }

    @Test func receivedBytesLeaveTheWindowBeforeTheRequestEnds() {
        var scheduler = FetchScheduler()
        scheduler.window.minimumWindowBytes = 1000
        scheduler.window.openBDPs = 1.0
        for n in 1...100 { scheduler.enqueue(id(UInt64(n)), priority: .prefetch(rank: Double(n)), weightBytes: 1000) }
        let link = LinkEstimate(bandwidthBytesPerSecond: 1_000_000, rttSeconds: 0.010, bytesReceived: 0)
        #expect(scheduler.admit(link: link, now: 0).count == 10)
        // A server interleaving ten responses: half of each has arrived, none has ended.
        for n in 1...10 { scheduler.received(id(UInt64(n)), bytes: 500) }
        #expect(scheduler.prefetchBytesInFlight == 5_000)
        #expect(scheduler.admit(link: link, now: 0).count == 5)
        // More bytes than expected do not count twice; ending a request releases what is left.
        scheduler.received(id(1), bytes: 5_000)
        scheduler.finished(id(1), link: link, now: 0)
        scheduler.finished(id(2), link: link, now: 0)
        #expect(scheduler.prefetchBytesInFlight == 9_000)
    }

    @Test func queuedPrefetchCanBeCancelledAndReordered() {
        var scheduler = FetchScheduler()
        scheduler.maximumInFlight = 1
        scheduler.enqueue(id(1), priority: .prefetch(rank: 1), weightBytes: 10)
        scheduler.enqueue(id(2), priority: .prefetch(rank: 2), weightBytes: 10)
        scheduler.enqueue(id(3), priority: .prefetch(rank: 3), weightBytes: 10)
        let removed = scheduler.removeQueued(id(1))
        #expect(removed)
        scheduler.reprioritize(id(3), to: .prefetch(rank: 0))
        #expect(scheduler.admit(link: unmeasured, now: 0) == [id(3)])
        scheduler.finished(id(3), link: unmeasured, now: 0)
        #expect(scheduler.admit(link: unmeasured, now: 0) == [id(2)])
        let removedRunning = scheduler.removeQueued(id(2))
        #expect(!removedRunning)
    }

    @Test func promotingQueuedPrefetchToDemandJumpsTheQueue() {
        var scheduler = FetchScheduler()
        scheduler.maximumInFlight = 1
        scheduler.enqueue(id(1), priority: .prefetch(rank: 1), weightBytes: 10)
        scheduler.enqueue(id(2), priority: .prefetch(rank: 2), weightBytes: 10)
        scheduler.reprioritize(id(2), to: .demand)
        #expect(scheduler.admit(link: unmeasured, now: 0) == [id(2)])
        #expect(scheduler.demandBytesInFlight == 10)
    }

    @Test func equalRanksKeepSubmissionOrder() {
        var scheduler = FetchScheduler()
        for n in 1...5 { scheduler.enqueue(id(UInt64(n)), priority: .prefetch(rank: 7), weightBytes: 1) }
        #expect(scheduler.admit(link: unmeasured, now: 0) == (1...5).map { id(UInt64($0)) })
    }
}

@Suite struct LinkEstimatorTests {
    @Test func measuresRateOfABusyLink() {
        var estimator = LinkEstimator()
        // 2.5 MB/s: 25 kB every 10 ms for two seconds of made-up time.
        var now = 100.0
        estimator.tick(at: now, busy: true)
        for _ in 0..<200 {
            now += 0.01
            estimator.received(25_000, at: now)
            estimator.tick(at: now, busy: true)
        }
        let rate = try! #require(estimator.estimate.bandwidthBytesPerSecond)
        #expect(abs(rate - 2_500_000) / 2_500_000 < 0.05)
        #expect(estimator.estimate.bytesReceived == 5_000_000)
    }

    /// A small window: one 50 kB body every 50 ms over a 12.5 MB/s bottleneck (each body arrives in
    /// 4 ms, then the link idles). Throughput is 1 MB/s, but the link's rate is what the window needs.
    @Test func measuresTheBottleneckNotTheWindowLimitedThroughput() {
        var estimator = LinkEstimator()
        var now = 10.0
        estimator.tick(at: now, busy: false)
        for _ in 0..<40 {
            let start = now
            // First slice (10 kB), then four more 0.8 ms apart, the loop ticking at each arrival.
            estimator.received(10_000, at: now, startsBody: true)
            estimator.tick(at: now, busy: true)
            for _ in 0..<4 {
                now += 0.0008
                estimator.received(10_000, at: now)
                estimator.tick(at: now, busy: true)
            }
            estimator.tick(at: now, busy: false)
            now = start + 0.05
            estimator.tick(at: now, busy: false)
        }
        let rate = try! #require(estimator.estimate.bandwidthBytesPerSecond)
        #expect(abs(rate - 12_500_000) / 12_500_000 < 0.1)
        #expect(estimator.estimate.bytesReceived == 40 * 50_000)
    }

    @Test func oneBurstBinDoesNotRaiseTheEstimate() {
        var estimator = LinkEstimator()
        var now = 0.0
        estimator.tick(at: now, busy: true)
        for step in 0..<100 {
            now += 0.01
            // 1 MB/s, except one 10 ms step whose bytes arrive three times as fast.
            estimator.received(step == 55 ? 30_000 : 10_000, at: now)
            estimator.tick(at: now, busy: true)
        }
        let rate = try! #require(estimator.estimate.bandwidthBytesPerSecond)
        #expect(abs(rate - 1_000_000) / 1_000_000 < 0.05)
    }

    @Test func idleTimeDoesNotLowerTheEstimate() {
        var estimator = LinkEstimator()
        var now = 0.0
        estimator.tick(at: now, busy: true)
        for _ in 0..<50 {
            now += 0.01
            estimator.received(10_000, at: now)
            estimator.tick(at: now, busy: true)
        }
        let busyRate = try! #require(estimator.estimate.bandwidthBytesPerSecond)
        for _ in 0..<100 {
            now += 0.01
            estimator.tick(at: now, busy: false)
        }
        #expect(estimator.estimate.bandwidthBytesPerSecond == busyRate)
    }

    @Test func rttIsTheRecentMinimum() {
        var estimator = LinkEstimator()
        estimator.firstByte(after: 0.080, at: 1)
        estimator.firstByte(after: 0.060, at: 2)
        estimator.firstByte(after: 0.090, at: 3)
        #expect(estimator.estimate.rttSeconds == 0.060)
        // Samples older than the window stop counting once new ones arrive.
        estimator.firstByte(after: 0.070, at: 20)
        #expect(estimator.estimate.rttSeconds == 0.070)
        // First-byte times of requests that started behind a full window include the queue: not RTT samples.
        estimator.firstByte(after: 0.300, at: 25, uncongested: false)
        estimator.firstByte(after: 0.400, at: 40, uncongested: false)
        #expect(estimator.estimate.rttSeconds == 0.070)
        #expect(estimator.estimate.smoothedRTTSeconds! > 0.070)
        let bdp = LinkEstimate(bandwidthBytesPerSecond: 1_000_000, rttSeconds: 0.05, bytesReceived: 0).bandwidthDelayProductBytes
        #expect(bdp == 50_000)
    }
}
