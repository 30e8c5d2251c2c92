import Dispatch
import Foundation
import Hypervisor
import Logging
import StreamClient

/// A machine that arrived by migration and runs here, with the rest of its memory still coming
/// (post-copy) or already here (stop-and-copy). When every page is here the source is told, and
/// frees its copy.
public final class IncomingMigration: @unchecked Sendable {
    /// What the destination measured.
    public struct Statistics: Codable, Sendable, Equatable {
        public var mode: MigrationMode
        /// Seconds from the offer's arrival until the machine started here.
        public var startSeconds: Double
        /// Seconds from the offer's arrival until every page was here (nil while some are not).
        public var completeSeconds: Double?
        public var batchesFetched: Int
        public var bytesReceived: Int
        /// Batches a guest fault asked for, and data pages handed out for a fault (not ahead of it).
        public var demandBatches: Int
        public var pagesOnDemand: Int
        public var pagesInstalled: Int
    }

    public let machine: Machine
    public let mode: MigrationMode
    private let source: RemotePageSource
    private let transfer: BackgroundTransfer
    private let pagesURL: String
    private let noticeSeconds: Double
    private let logger: Logger
    private let arrivedAt = ContinuousClock.now
    private let times = Locked<(started: Double?, complete: Double?, failure: String?)>((nil, nil, nil))
    private let done = DispatchSemaphore(value: 0)

    init(machine: Machine, mode: MigrationMode, source: RemotePageSource, transfer: BackgroundTransfer, pagesURL: String,
         noticeSeconds: Double, logger: Logger) {
        self.machine = machine
        self.mode = mode
        self.source = source
        self.transfer = transfer
        self.pagesURL = pagesURL
        self.noticeSeconds = noticeSeconds
        self.logger = logger
    }

    private func elapsed() -> Double {
        let span = ContinuousClock.now - arrivedAt
        return Double(span.components.seconds) + Double(span.components.attoseconds) / 1e18
    }

    func markStarted() { times.withLock { $0.started = elapsed() } }

    /// Post-copy: starts the background transfer beside the running guest. Stop-and-copy: the
    /// transfer already ran; only the source is told.
    func startBackgroundTransfer() {
        guard mode == .postCopy else {
            DispatchQueue.global().async { [self] in finish(error: nil) }
            return
        }
        guard transfer.streams > 0 else { return }
        transfer.start { [self] error in finish(error: error) }
    }

    private func finish(error: (any Error)?) {
        if let error {
            // The guest cannot go on without pages it may touch next: stop it, never let it run on.
            let problem = "the background transfer from the migration source failed: \(error)"
            times.withLock { $0.failure = problem }
            machine.stop(.failure("guest memory unavailable, VM stopped: \(problem)"))
            done.signal()
            return
        }
        times.withLock { $0.complete = elapsed() }
        let statistics = source.statistics
        let notice = (try? JSONEncoder().encode(SourcePageServer.Completion(pagesInstalled: statistics.pagesInstalled, pagesOnDemand: statistics.pagesOnDemand))) ?? Data()
        let deadline = monotonicSeconds() + noticeSeconds
        while true {
            do {
                let answer = try HTTPPost(url: pagesURL + "/complete", body: notice, mode: .h2cPriorKnowledge, timeoutSeconds: 10).perform()
                if answer.status == 204 { break }
                throw MigrationError.incomplete("HTTP \(answer.status): \(answer.summary)")
            } catch {
                guard monotonicSeconds() < deadline else {
                    // The machine has all its memory and runs on; only the source's copy stays.
                    logger.warning("could not tell the migration source that every page is here; it keeps its copy", metadata: ["problem": "\(error)"])
                    break
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        done.signal()
    }

    /// Waits until every page is here (true) or the transfer failed or `timeout` passed (false).
    public func waitUntilComplete(timeout: Duration) -> Bool {
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        guard done.wait(timeout: .now() + .nanoseconds(Int(nanoseconds))) == .success else { return false }
        done.signal() // let later waiters through as well
        return times.withLock { $0.complete != nil }
    }

    /// Why the transfer failed, if it did.
    public var failure: String? { times.withLock { $0.failure } }

    public var statistics: Statistics {
        let counters = source.statistics
        let (started, complete, _) = times.withLock { $0 }
        return Statistics(mode: mode, startSeconds: started ?? 0, completeSeconds: complete, batchesFetched: counters.batchesFetched,
                          bytesReceived: counters.bytesReceived, demandBatches: counters.demandBatches,
                          pagesOnDemand: counters.pagesOnDemand, pagesInstalled: counters.pagesInstalled)
    }
}
