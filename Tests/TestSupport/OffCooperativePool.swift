import Foundation
import Testing

/// Runs every job on a thread of its own: tests that block (a VM run, waiting for a vCPU stuck in a
/// userfaultfd fault) then never hold one of the cooperative pool's threads.
public final class ThreadPerJobExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = ThreadPerJobExecutor()

    public func enqueue(_ job: UnownedJob) {
        let thread = Thread { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// Moves a suite's tests off Swift's cooperative pool, which has one thread per core (two on the
/// CI host). swift-testing runs synchronous tests on that pool too; two VM-booting tests there
/// blocked every other test's async work, and the in-process servers of other suites closed their
/// starved clients' connections as idle.
public struct OffCooperativePool: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public init() {}

    public func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        try await withTaskExecutorPreference(ThreadPerJobExecutor.shared) { try await function() }
    }
}

extension Trait where Self == OffCooperativePool {
    public static var offCooperativePool: Self { Self() }
}
