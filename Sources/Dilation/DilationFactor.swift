/// How many times slower a guest's time runs than the host's: DieCast's time-dilation factor (TDF,
/// Gupta et al., NSDI 2006 / 2008). Under a factor of 10 a guest sees one second pass for every ten
/// host seconds, so the host's CPU, disk and network look ten times faster to it.
public struct DilationFactor: Sendable, Equatable, CustomStringConvertible {
    /// Factors below 1 would speed guest time up, which hides no capacity and breaks the premise;
    /// above 1000 a guest timer tick would take longer than typical host watchdogs allow.
    public static let range: ClosedRange<Double> = 1...1000

    /// No dilation: guest time is host time.
    public static let none = DilationFactor(unchecked: 1)

    public let value: Double

    public init(_ value: Double) throws {
        guard value.isFinite, Self.range.contains(value) else { throw DilationError.invalidFactor(value) }
        self.value = value
    }

    private init(unchecked value: Double) { self.value = value }

    public var description: String { "TDF \(value)" }
}
