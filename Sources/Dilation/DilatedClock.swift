/// One VM's view of time under dilation: guest time advances `factor` times slower than host time.
///
/// Every time device of a dilated VM (PIT, LAPIC timer deadlines, kvmclock, the TSC it reports)
/// must derive from one such clock, or the guest sees its clocks disagree. The clock is piecewise
/// linear: changing the factor rebases it so guest time stays continuous and never steps back.
public struct DilatedClock<Source: HostTimeSource>: Sendable {
    public private(set) var factor: DilationFactor
    private let source: Source
    /// Host and guest time at the last rebase; guest time is linear in host time since then.
    private var hostEpoch: UInt64
    private var guestEpoch: UInt64

    /// A clock whose guest time starts at `guestStart` nanoseconds now.
    public init(factor: DilationFactor, source: Source, guestStart: UInt64 = 0) {
        self.factor = factor
        self.source = source
        hostEpoch = source.nanoseconds()
        guestEpoch = guestStart
    }

    /// Guest time now, in nanoseconds.
    public func guestNanoseconds() -> UInt64 {
        guestNanoseconds(atHost: source.nanoseconds())
    }

    /// Guest time at a given host time (not before the last rebase; earlier reads clamp to it).
    public func guestNanoseconds(atHost host: UInt64) -> UInt64 {
        let elapsed = host > hostEpoch ? host - hostEpoch : 0
        return guestEpoch + UInt64((Double(elapsed) / factor.value).rounded(.down))
    }

    /// Host time that must pass for `guest` nanoseconds of guest time: how long a guest timer of
    /// that length really waits on the host.
    public func hostDuration(forGuest guest: UInt64) -> UInt64 {
        let scaled = Double(guest) * factor.value
        return scaled >= Double(UInt64.max) ? UInt64.max : UInt64(scaled.rounded(.up))
    }

    /// Host time at which guest time reaches `guestDeadline` (now or in the past → the current host time).
    public func hostDeadline(forGuestTime guestDeadline: UInt64) -> UInt64 {
        let now = source.nanoseconds()
        let guestNow = guestNanoseconds(atHost: now)
        guard guestDeadline > guestNow else { return now }
        let wait = hostDuration(forGuest: guestDeadline - guestNow)
        return now > UInt64.max - wait ? UInt64.max : now + wait
    }

    /// Guest frequency of a counter that runs at `hostHertz` on the host, as the guest must see it
    /// tick (for example the TSC under a dilated clock: the guest is told the nominal frequency while
    /// the counter advances this many times per host second).
    public func dilatedRate(ofHostHertz hostHertz: Double) -> Double {
        hostHertz / factor.value
    }

    /// Changes the factor from now on, keeping guest time continuous.
    public mutating func setFactor(_ newFactor: DilationFactor) {
        let now = source.nanoseconds()
        guestEpoch = guestNanoseconds(atHost: now)
        hostEpoch = max(now, hostEpoch)
        factor = newFactor
    }
}
