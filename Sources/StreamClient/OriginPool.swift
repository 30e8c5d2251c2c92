import Foundation

/// The origins a client may fetch from, in the order the user gave them, with what has been learned
/// about each: the HTTP mode that works, and recent failures. Requests try healthy origins first, so
/// after a failover later requests go straight to the origin that works.
final class OriginPool: @unchecked Sendable {
    private struct State {
        var mode: HTTPMode
        /// Whether a request in `mode` ever succeeded; until then a protocol failure may mean the
        /// server speaks the other HTTP version.
        var modeConfirmed = false
        var consecutiveFailures = 0
    }

    /// Failures in a row after which an origin goes to the back of the order.
    static let unhealthyAfterFailures = 3

    let origins: [Origin]
    private let lock = NSLock()
    private var states: [State]

    init(_ origins: [Origin]) throws {
        guard !origins.isEmpty else { throw ClientError.noOrigins }
        self.origins = origins
        states = origins.map { State(mode: $0.preferredMode) }
    }

    /// Origin indices to try, healthy ones first, each group in the user's order.
    func order() -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        let indices = Array(origins.indices)
        return indices.filter { states[$0].consecutiveFailures < Self.unhealthyAfterFailures }
            + indices.filter { states[$0].consecutiveFailures >= Self.unhealthyAfterFailures }
    }

    func mode(_ index: Int) -> HTTPMode {
        lock.lock()
        defer { lock.unlock() }
        return states[index].mode
    }

    func succeeded(_ index: Int, httpVersion: Int) {
        lock.lock()
        defer { lock.unlock() }
        states[index].consecutiveFailures = 0
        states[index].modeConfirmed = true
    }

    func failed(_ index: Int) {
        lock.lock()
        defer { lock.unlock() }
        states[index].consecutiveFailures += 1
    }

    /// After a protocol-level failure on a cleartext origin whose mode never worked, switches between
    /// h2c prior knowledge and HTTP/1.1 and returns true (the caller retries once at once).
    func switchMode(_ index: Int, after error: FetchError) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard error.suggestsNoHTTP2, !states[index].modeConfirmed else { return false }
        switch states[index].mode {
        case .h2cPriorKnowledge: states[index].mode = .http1
        case .http1 where !origins[index].isTLS: states[index].mode = .h2cPriorKnowledge
        default: return false
        }
        return true
    }
}
