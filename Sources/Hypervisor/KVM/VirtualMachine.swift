import CKVM
import Glibc

/// A KVM VM file descriptor: guest memory slots, the in-kernel interrupt controllers and timer,
/// interrupt lines, and vCPU creation.
public final class VirtualMachine: @unchecked Sendable {
    /// Where KVM may place the three-page TSS that Intel VMX needs for real mode (api.rst,
    /// KVM_SET_TSS_ADDR); it must lie in guest address space but outside RAM — just below 4 GiB, as
    /// QEMU and Firecracker do.
    static let tssAddress: UInt = 0xfffb_d000
    /// One page after the TSS, for the EPT identity map (api.rst, KVM_SET_IDENTITY_MAP_ADDR).
    static let identityMapAddress: UInt64 = 0xfffb_c000

    let fd: Int32
    /// Kept alive so the vCPU mapping size stays available.
    public let system: KVMSystem
    private var nextSlot: UInt32 = 0

    init(fd: Int32, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    deinit { close(fd) }

    /// Maps `length` bytes at host address `host` into guest physical memory at `guestAddress`.
    public func mapMemory(guestAddress: UInt64, length: Int, host: UnsafeMutableRawPointer, readOnly: Bool = false) throws {
        var region = kvm_userspace_memory_region(
            slot: nextSlot, flags: readOnly ? UInt32(KVM_MEM_READONLY) : 0, guest_phys_addr: guestAddress,
            memory_size: UInt64(length), userspace_addr: UInt64(UInt(bitPattern: host)))
        try IOCTL.call(fd, CKVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region)
        nextSlot += 1
    }

    /// Maps every region of `memory`.
    public func mapMemory(_ memory: GuestMemory) throws {
        for region in memory.regions {
            try mapMemory(guestAddress: region.guestAddress, length: region.length, host: region.host)
        }
    }

    /// Creates the in-kernel PIC + IOAPIC + local APICs and the PIT (8254): the x86 platform
    /// interrupt controllers and timer, emulated in the kernel so timer ticks cost no exits.
    public func createPlatformDevices() throws {
        var identityMap = Self.identityMapAddress
        // The identity map only matters on Intel hosts without unrestricted guest; ignore refusal.
        _ = try? IOCTL.call(fd, CKVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &identityMap)
        try IOCTL.call(fd, CKVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", value: Self.tssAddress)
        try IOCTL.call(fd, CKVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", value: 0)
        var pit = kvm_pit_config()
        pit.flags = CKVM_PIT_SPEAKER_DUMMY // port 0x61 handled in kernel too, so speaker probes don't exit
        try IOCTL.call(fd, CKVM_CREATE_PIT2, "KVM_CREATE_PIT2", &pit)
    }

    /// Drives interrupt line `gsi` of the in-kernel irqchip to `level`.
    public func setInterruptLine(_ gsi: UInt32, level: Bool) throws {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        try IOCTL.call(fd, CKVM_IRQ_LINE, "KVM_IRQ_LINE", &line)
    }

    /// Raises then lowers `gsi`: an edge, which is how the ISA UART and virtio-mmio interrupts are wired.
    public func pulseInterrupt(_ gsi: UInt32) throws {
        try setInterruptLine(gsi, level: true)
        try setInterruptLine(gsi, level: false)
    }

    /// Creates vCPU number `index` (its APIC ID).
    public func createVCPU(index: Int) throws -> VCPU {
        let vcpuFD = try IOCTL.call(fd, CKVM_CREATE_VCPU, "KVM_CREATE_VCPU", value: UInt(index))
        return try VCPU(fd: vcpuFD, index: index, mapSize: system.vcpuMapSize, machine: self)
    }
}
