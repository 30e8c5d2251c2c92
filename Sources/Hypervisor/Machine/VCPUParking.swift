import Foundation
import Synchronization

/// The pause handshake between the thread that pauses a machine and its vCPU threads. A vCPU
/// thread passes `checkpoint` before every KVM_RUN; while a pause is requested it completes its
/// pending exit, counts itself parked and sleeps until resumed or stopped. The pausing thread kicks
/// the vCPUs out of KVM_RUN (immediate_exit + signal) and waits until every one is parked.
final class VCPUParking: @unchecked Sendable {
    /// How often the pausing thread kicks again while waiting: a signal that arrived just before a
    /// vCPU entered KVM_RUN is lost, though `immediate_exit` normally covers that window.
    static let rekickInterval: TimeInterval = 0.05

    private let condition = NSCondition()
    private var pauseRequested = false
    private var stopping = false
    private var parked = 0
    /// `pauseRequested || stopping`, readable without the lock: the check every vCPU makes before
    /// every KVM_RUN is one atomic load while nothing is asked of it. A vCPU that read it just before
    /// it changed is then kicked out of KVM_RUN (immediate_exit, signal) and checks again.
    private let attentionNeeded = Atomic<Bool>(false)
    let vcpuCount: Int

    init(vcpuCount: Int) {
        self.vcpuCount = vcpuCount
    }

    var isStopping: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopping
    }

    /// vCPU thread, before entering the guest. Parks while a pause is requested (after running
    /// `beforeParking`, which completes the pending exit). Returns false once the machine is stopping.
    func checkpoint(beforeParking: () -> Void) -> Bool {
        guard attentionNeeded.load(ordering: .acquiring) else { return true }
        condition.lock()
        guard pauseRequested, !stopping else {
            defer { condition.unlock() }
            return !stopping
        }
        condition.unlock()
        beforeParking()
        condition.lock()
        defer { condition.unlock() }
        parked += 1
        condition.broadcast()
        while pauseRequested, !stopping { condition.wait() }
        parked -= 1
        return !stopping
    }

    /// Asks every vCPU to park; returns at once.
    func requestPause() {
        condition.lock()
        pauseRequested = true
        attentionNeeded.store(true, ordering: .releasing)
        condition.unlock()
    }

    /// Waits until every vCPU is parked, calling `kick` now and then; false when the machine began
    /// stopping or `deadline` passed first.
    func waitUntilParked(deadline: Date, kick: () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while parked < vcpuCount, !stopping {
            kick()
            let until = min(deadline, Date(timeIntervalSinceNow: Self.rekickInterval))
            if !condition.wait(until: until), Date() >= deadline { break }
        }
        return parked == vcpuCount && !stopping
    }

    /// Lets parked vCPUs enter the guest again.
    func resume() {
        condition.lock()
        pauseRequested = false
        attentionNeeded.store(stopping, ordering: .releasing)
        condition.broadcast()
        condition.unlock()
    }

    /// Releases parked vCPUs for good: their run loops return.
    func stop() {
        condition.lock()
        stopping = true
        attentionNeeded.store(true, ordering: .releasing)
        condition.broadcast()
        condition.unlock()
    }
}
