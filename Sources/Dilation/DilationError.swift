/// Errors of the Dilation module.
public enum DilationError: Error, Equatable, CustomStringConvertible {
    case invalidFactor(Double)

    public var description: String {
        switch self {
        case let .invalidFactor(value):
            "time-dilation factor \(value) is invalid: use a finite value from \(DilationFactor.range.lowerBound) to \(DilationFactor.range.upperBound)"
        }
    }
}
