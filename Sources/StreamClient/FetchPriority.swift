/// How urgently a request is needed. Demand requests (a reader is blocked) always start before any
/// prefetch; prefetch requests start in ascending `rank` order and only while the link has room.
public enum FetchPriority: Sendable, Equatable {
    case demand
    /// Lower ranks start sooner; equal ranks start in submission order.
    case prefetch(rank: Double)

    public var isDemand: Bool { self == .demand }
}
