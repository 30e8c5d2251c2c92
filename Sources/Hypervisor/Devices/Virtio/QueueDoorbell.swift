import Foundation
import Glibc
import Logging

/// A virtqueue's notification register served by an ioeventfd: KVM turns the guest's QueueNotify
/// write into an eventfd signal and resumes the guest at once, and this I/O thread runs the queue.
/// Without it every notification is a KVM_EXIT_MMIO that the vCPU thread serves before the guest
/// continues. Writes KVM does not match (other values, other widths) still arrive through the bus.
public final class QueueDoorbell: @unchecked Sendable {
    let transport: VirtioMMIOTransport
    let queueIndex: Int
    private let event: EventFD
    private let stopping = Locked(false)
    private let started = Locked(false)
    private let finished = DispatchSemaphore(value: 0)
    /// Pause gate: while `paused`, a woken I/O thread waits before running the queue; `serving` is
    /// true while it runs one, so `pause` can wait for that run to end.
    private let gate = NSCondition()
    private var paused = false
    private var serving = false

    /// Registers the doorbell for queue `queueIndex` of the transport whose window starts at
    /// `windowAddress` (guest-physical).
    public init(transport: VirtioMMIOTransport, queueIndex: Int, windowAddress: UInt64, machine: VirtualMachine) throws {
        self.transport = transport
        self.queueIndex = queueIndex
        event = try EventFD()
        // QueueNotify is a 32-bit register whose value is the queue index (virtio 1.x §4.2.2).
        try machine.attachDoorbell(event, address: windowAddress + VirtioMMIOTransport.queueNotifyRegister,
                                   length: 4, value: UInt64(queueIndex))
    }

    /// Starts the I/O thread (once).
    public func start() {
        let first = started.withLock { value -> Bool in
            defer { value = true }
            return !value
        }
        guard first else { return }
        let thread = Thread { [self] in
            serve()
            finished.signal()
        }
        thread.name = "virtio-doorbell\(queueIndex)"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Asks the I/O thread to end after the notification it is serving; does not wait.
    public func stop() {
        stopping.withLock { $0 = true }
        gate.lock()
        gate.broadcast()
        gate.unlock()
        event.signal() // wakes the thread to see `stopping`
    }

    /// Has the I/O thread look at the queue once, as if the guest had rung: after a restore, a
    /// notification the snapshotted machine had received but not yet served is in the restored
    /// avail ring with no doorbell left to ring for it (Firecracker kicks restored devices the same way).
    public func kick() {
        event.signal()
    }

    /// Quiesces the I/O thread: returns once it runs no queue and will start none until `resume`
    /// (a notification that arrives meanwhile is served after resuming).
    public func pause() {
        gate.lock()
        paused = true
        while serving { gate.wait() }
        gate.unlock()
    }

    /// Lets the I/O thread serve notifications again, and has it look at the queue once in case a
    /// notification was held back while paused.
    public func resume() {
        gate.lock()
        paused = false
        gate.broadcast()
        gate.unlock()
        kick()
    }

    /// Waits up to `limit` for the I/O thread to end after `stop` (at once if it never started).
    public func waitUntilStopped(limit: DispatchTimeInterval = .seconds(10)) {
        guard started.withLock({ $0 }) else { return }
        if finished.wait(timeout: .now() + limit) == .success { finished.signal() }
    }

    private func serve() {
        while !stopping.withLock({ $0 }) {
            // One wake-up may stand for several writes: the queue is drained each time anyway.
            guard (try? event.wait()) != nil else { return }
            gate.lock()
            while paused, !stopping.withLock({ $0 }) { gate.wait() }
            serving = true
            gate.unlock()
            defer {
                gate.lock()
                serving = false
                gate.broadcast()
                gate.unlock()
            }
            guard !stopping.withLock({ $0 }) else { return }
            transport.notify(queue: queueIndex)
        }
    }
}
