/// What vtube buffers before the guest starts. vTube's rule sizes the buffer so that the rest of the
/// predicted path streams in before the guest needs it; the question is which path. `ready` is the
/// default: in the lab (BENCHMARKS.md, session 6) it met every target of issue #6 in one run, where
/// `path` started the guest 1.3× later than the oracle because the session's later reads (12 MiB
/// in one step) dominated the buffer.
public enum StartupBuffer: String, CaseIterable, Sendable {
    /// The whole predicted path, after-ready clusters included: the session after the start runs
    /// without stalls, at the cost of a later start when it reads faster than the link brings data.
    case path
    /// Only the clusters before ready: the shortest time to ready; the session after it stalls
    /// wherever it outruns the link (its pauses give the link room to catch up).
    case ready
}
