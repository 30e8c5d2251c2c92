import CKVM
import Glibc

/// A Linux eventfd: a 64-bit counter that one side adds to and the other reads (and resets). KVM
/// signals one when the guest writes a registered doorbell (ioeventfd), and injects an interrupt when
/// we signal one (irqfd), so neither needs a trip through the vCPU thread.
public final class EventFD: @unchecked Sendable {
    public let fd: Int32

    public init() throws {
        let fd = ckvm_eventfd(0, CKVM_EFD_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.system(call: "eventfd", errno: errno) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Adds one to the counter, waking a reader (or, for an irqfd, raising the interrupt).
    public func signal() {
        var one: UInt64 = 1
        while write(fd, &one, MemoryLayout<UInt64>.size) < 0, errno == EINTR {}
    }

    /// Blocks until the counter is non-zero, then returns it and resets it to zero.
    public func wait() throws -> UInt64 {
        var value: UInt64 = 0
        while true {
            if read(fd, &value, MemoryLayout<UInt64>.size) == MemoryLayout<UInt64>.size { return value }
            let error = errno
            if error == EINTR { continue }
            throw HypervisorError.system(call: "read(eventfd)", errno: error)
        }
    }
}
