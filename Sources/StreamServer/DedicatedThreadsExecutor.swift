import Foundation
import Synchronization

/// A task executor with its own threads, for a `CatalogServer` that shares its process with blocking
/// work (benchmarks and tests that boot VMs next to an in-process server).
///
/// Swift's cooperative pool has one thread per core (two here). Work that blocks a pool thread for
/// seconds, such as a VM run or waiting for a child process (swift-testing runs even synchronous
/// tests on the pool), starved the server's async handlers: its clients saw connections closed
/// without an answer. Starting the server with `Task(executorPreference:)` on this executor keeps
/// it as independent of the rest of the process as a separate `streamvm serve` process would be.
public final class DedicatedThreadsExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = Mutex<[UnownedJob]>([])
    private let available = DispatchSemaphore(value: 0)

    public init(threads: Int = 2, name: String = "catalog-server") {
        for index in 0..<threads {
            let thread = Thread { [unowned self] in self.work() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
    }

    public func enqueue(_ job: UnownedJob) {
        queue.withLock { $0.append(job) }
        available.signal()
    }

    private func work() {
        while true {
            available.wait()
            guard let job = queue.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    /// One executor for the whole process: its threads live as long as the process.
    public static let shared = DedicatedThreadsExecutor()
}
