/// A network link as a dilated guest should perceive it, and what the host must shape to make it so:
/// a guest that sees time run `factor` times slow sees `factor` times the bytes per second, and
/// every delay `factor` times shorter. So the host link carries rate ÷ TDF and holds frames for
/// delay × TDF (DieCast's network scaling).
public struct DilatedLink: Sendable, Equatable {
    /// What the guest should perceive.
    public var perceivedBitsPerSecond: UInt64?
    public var perceivedDelayMilliseconds: Double
    public let factor: DilationFactor

    public init(perceivedBitsPerSecond: UInt64?, perceivedDelayMilliseconds: Double = 0, factor: DilationFactor) {
        self.perceivedBitsPerSecond = perceivedBitsPerSecond
        self.perceivedDelayMilliseconds = perceivedDelayMilliseconds
        self.factor = factor
    }

    /// The rate the host's shaper must hold the link to (nil: unlimited), never below 1 bit/s.
    public var realBitsPerSecond: UInt64? {
        perceivedBitsPerSecond.map { UInt64(max(1, (Double($0) / factor.value).rounded())) }
    }

    /// The delay the host's shaper must add.
    public var realDelayMilliseconds: Double { perceivedDelayMilliseconds * factor.value }
}
