import Foundation
import Hypervisor

/// Brings every data page of a migrated machine over in the background, batch by batch in the given
/// order, through the page-fault handler (so a page the guest faulted on first is skipped, and a
/// fault on a page being installed waits for that install). `streams` threads keep that many batch
/// requests in flight. Stop-and-copy runs it to the end before the guest starts; post-copy beside it.
final class BackgroundTransfer: @unchecked Sendable {
    private let handler: PageFaultHandler
    private let batches: PageBatches
    private let order: [Int]
    let streams: Int
    private let lock = NSLock()
    private var next = 0
    private var failure: (any Error)?
    private let finished = DispatchGroup()

    init(handler: PageFaultHandler, batches: PageBatches, order: [Int], streams: Int) {
        self.handler = handler
        self.batches = batches
        self.order = order
        self.streams = max(0, streams)
    }

    /// Starts the threads; `completion` runs once on one of them when every batch is in, or with
    /// the first error (then the rest stop early).
    func start(completion: @escaping @Sendable ((any Error)?) -> Void) {
        for index in 0..<streams {
            finished.enter()
            let thread = Thread { [self] in
                work()
                finished.leave()
            }
            thread.name = "migration-pull-\(index)"
            thread.start()
        }
        finished.notify(queue: .global()) { [self] in completion(lock.withLock { failure }) }
    }

    /// Runs the transfer to the end on the caller's thread (plus `streams - 1` others); throws the first error.
    func run() throws {
        guard streams > 0 else { throw MigrationError.server("stop-and-copy needs at least one background stream") }
        let done = DispatchSemaphore(value: 0)
        let outcome = Locked<(any Error)?>(nil)
        start { error in
            outcome.withLock { $0 = error }
            done.signal()
        }
        done.wait()
        if let error = outcome.withLock({ $0 }) { throw error }
    }

    private func work() {
        while true {
            let batch: Int? = lock.withLock {
                guard failure == nil, next < order.count else { return nil }
                defer { next += 1 }
                return order[next]
            }
            guard let batch else { return }
            do {
                try handler.populate(pages: batches.dataPages(ofBatch: batch))
            } catch {
                lock.withLock { if failure == nil { failure = error } }
                return
            }
        }
    }
}
