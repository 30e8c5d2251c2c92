import Hypervisor
import Synchronization
import Testing

/// The disk limit's token bucket, on a clock the test moves: requests within the burst pass at
/// once, beyond it they wait for their bytes at the rate, and the latency is added to each.
@Suite struct DiskThrottleTests {
    /// A clock that only moves when the throttle sleeps or the test advances it.
    final class FakeClock: Sendable {
        let time = Mutex(100.0)
        let slept = Mutex<[Double]>([])
        var now: @Sendable () -> Double { { self.time.withLock { $0 } } }
        var sleep: @Sendable (Double) -> Void {
            { seconds in
                self.slept.withLock { $0.append(seconds) }
                self.time.withLock { $0 += seconds }
            }
        }
        func advance(_ seconds: Double) { time.withLock { $0 += seconds } }
    }

    @Test func beyondTheBurstARequestWaitsForItsBytesAtTheRate() {
        let clock = FakeClock()
        let throttle = DiskThrottle(DiskLimit(bytesPerSecond: 1_000_000), burstBytes: 100_000, now: clock.now, sleep: clock.sleep)
        #expect(throttle.charge(bytes: 100_000) == 0, "a full bucket pays for one burst")
        #expect(abs(throttle.charge(bytes: 500_000) - 0.5) < 1e-9, "500 kB at 1 MB/s")
        #expect(abs(throttle.charge(bytes: 250_000) - 0.25) < 1e-9, "the bucket is empty after the wait")
        clock.advance(10)
        #expect(throttle.charge(bytes: 100_000) == 0, "idle time refills it, up to the burst only")
        #expect(abs(throttle.charge(bytes: 100_000) - 0.1) < 1e-9)
        #expect(abs(throttle.waitedSeconds - 0.85) < 1e-9)
        // Over the whole run, bytes beyond the first burst went at exactly the rate.
        #expect(clock.slept.withLock { $0.count } == 3)
    }

    @Test func theLatencyIsAddedToEveryRequestWithOrWithoutARate() {
        let clock = FakeClock()
        let latencyOnly = DiskThrottle(DiskLimit(bytesPerSecond: nil, requestLatencySeconds: 0.004), now: clock.now, sleep: clock.sleep)
        #expect(latencyOnly.charge(bytes: 1 << 20) == 0.004)
        #expect(latencyOnly.charge(bytes: 0) == 0.004, "a flush waits too")
        let both = DiskThrottle(DiskLimit(bytesPerSecond: 1_000, requestLatencySeconds: 0.5), burstBytes: 0, now: clock.now, sleep: clock.sleep)
        #expect(abs(both.charge(bytes: 1_000) - 1.5) < 1e-9)
    }

    @Test func aLimitWithNeitherRateNorLatencyIsUnlimited() {
        #expect(DiskLimit(bytesPerSecond: nil).isUnlimited)
        #expect(!DiskLimit(bytesPerSecond: 1).isUnlimited)
        #expect(!DiskLimit(bytesPerSecond: nil, requestLatencySeconds: 0.001).isUnlimited)
    }
}
