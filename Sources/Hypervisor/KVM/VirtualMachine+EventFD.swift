import CKVM
import Glibc

/// irqfd and ioeventfd (api.rst, KVM_IRQFD and KVM_IOEVENTFD): interrupts raised and doorbells rung
/// through eventfds, handled inside KVM instead of by a vCPU thread's exit to the VMM.
extension VirtualMachine {
    /// Whether this host's KVM offers both (KVM_CAP_IRQFD, KVM_CAP_IOEVENTFD).
    public var supportsEventFDs: Bool {
        system.checkExtension(CKVM_CAP_IRQFD) > 0 && system.checkExtension(CKVM_CAP_IOEVENTFD) > 0
    }

    /// From now on, signalling `event` raises an edge on `gsi` of the in-kernel irqchip (KVM sets and
    /// clears the line, as `pulseInterrupt` does, without two ioctls per interrupt).
    public func attachInterrupt(_ event: EventFD, gsi: UInt32) throws {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: event.fd)
        request.gsi = gsi
        try IOCTL.call(fd, CKVM_IRQFD, "KVM_IRQFD", &request)
    }

    /// From now on, a guest write of `length` bytes equal to `value` at guest-physical `address`
    /// (MMIO) signals `event` and resumes the guest at once, without a KVM_EXIT_MMIO.
    public func attachDoorbell(_ event: EventFD, address: UInt64, length: UInt32, value: UInt64) throws {
        var request = kvm_ioeventfd()
        request.datamatch = value
        request.addr = address
        request.len = length
        request.fd = event.fd
        request.flags = CKVM_IOEVENTFD_FLAG_DATAMATCH
        try IOCTL.call(fd, CKVM_IOEVENTFD, "KVM_IOEVENTFD", &request)
    }
}
