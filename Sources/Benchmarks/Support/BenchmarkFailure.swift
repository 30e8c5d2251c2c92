/// A benchmark that could not run or measure what it set out to (a peer missing, a guest that did
/// not reach its marker): one readable line for the CLI's error report.
public struct BenchmarkFailure: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
