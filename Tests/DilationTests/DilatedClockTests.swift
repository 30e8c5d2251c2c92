import Dilation
import Synchronization
import Testing

/// Host time moved by hand.
final class ManualHostTime: HostTimeSource {
    private let now = Mutex<UInt64>(1_000)
    func nanoseconds() -> UInt64 { now.withLock { $0 } }
    func advance(by nanoseconds: UInt64) { now.withLock { $0 += nanoseconds } }
}

@Suite struct DilatedClockTests {
    @Test func guestTimeRunsFactorTimesSlower() throws {
        let host = ManualHostTime()
        let clock = DilatedClock(factor: try DilationFactor(10), source: host, guestStart: 500)
        #expect(clock.guestNanoseconds() == 500)
        host.advance(by: 10_000_000_000)
        #expect(clock.guestNanoseconds() == 500 + 1_000_000_000)
    }

    @Test func noDilationIsHostTime() {
        let host = ManualHostTime()
        let clock = DilatedClock(factor: .none, source: host)
        host.advance(by: 123_456_789)
        #expect(clock.guestNanoseconds() == 123_456_789)
    }

    @Test func guestTimersWaitLongerOnTheHost() throws {
        let host = ManualHostTime()
        let clock = DilatedClock(factor: try DilationFactor(4), source: host)
        #expect(clock.hostDuration(forGuest: 1_000) == 4_000)
        host.advance(by: 8_000) // guest time is now 2_000
        #expect(clock.hostDeadline(forGuestTime: 3_000) == host.nanoseconds() + 4_000)
        #expect(clock.hostDeadline(forGuestTime: 1_000) == host.nanoseconds(), "a past deadline is due now")
        #expect(clock.dilatedRate(ofHostHertz: 2_000_000_000) == 500_000_000)
    }

    @Test func changingTheFactorKeepsGuestTimeContinuous() throws {
        let host = ManualHostTime()
        var clock = DilatedClock(factor: try DilationFactor(2), source: host)
        host.advance(by: 1_000)
        #expect(clock.guestNanoseconds() == 500)
        clock.setFactor(try DilationFactor(5))
        #expect(clock.guestNanoseconds() == 500, "no jump at the change")
        host.advance(by: 1_000)
        #expect(clock.guestNanoseconds() == 700)
    }

    @Test func guestTimeIsMonotonic() throws {
        let host = ManualHostTime()
        let clock = DilatedClock(factor: try DilationFactor(3), source: host)
        var last: UInt64 = 0
        for step in 1...1000 {
            host.advance(by: UInt64(step % 7))
            let now = clock.guestNanoseconds()
            #expect(now >= last)
            last = now
        }
    }

    @Test(arguments: [0.0, 0.5, -1, .infinity, .nan, 1001])
    func invalidFactorsAreRefused(_ value: Double) {
        #expect(throws: DilationError.self) { try DilationFactor(value) }
    }
}
