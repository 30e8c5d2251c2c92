import Foundation

/// The priority of one logical object fetch across its retries. A prefetch that a reader starts
/// waiting for is raised to demand here, which also moves the request currently queued.
public final class FetchTicket: @unchecked Sendable {
    private let lock = NSLock()
    private var currentPriority: FetchPriority
    private var current: (fetcher: Fetcher, id: RequestID)?

    public init(priority: FetchPriority) { currentPriority = priority }

    public var priority: FetchPriority {
        lock.lock()
        defer { lock.unlock() }
        return currentPriority
    }

    public func raise(to priority: FetchPriority) {
        lock.lock()
        currentPriority = priority
        let current = self.current
        lock.unlock()
        if let current { current.fetcher.reprioritize(current.id, to: priority) }
    }

    func began(_ id: RequestID, on fetcher: Fetcher) {
        lock.lock()
        current = (fetcher, id)
        lock.unlock()
    }

    func ended() {
        lock.lock()
        current = nil
        lock.unlock()
    }
}
