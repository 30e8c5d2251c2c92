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
        event.signal()
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
            guard !stopping.withLock({ $0 }) else { return }
            transport.notify(queue: queueIndex)
        }
    }
}
