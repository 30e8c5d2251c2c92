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

    /// One KVM memory slot as registered (KVM_SET_USER_MEMORY_REGION).
    public struct MemorySlot: Sendable, Equatable {
        public let slot: UInt32
        public let guestAddress: UInt64
        public let length: Int
        /// The host address, as an integer (the mapping belongs to the caller).
        public let hostAddress: UInt
        public let readOnly: Bool
    }

    let fd: Int32
    /// Kept alive so the vCPU mapping size stays available.
    public let system: KVMSystem
    private let slots = Locked<[MemorySlot]>([])

    init(fd: Int32, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    deinit { close(fd) }

    /// Maps `length` bytes at host address `host` into guest physical memory at `guestAddress`;
    /// returns the slot number.
    @discardableResult
    public func mapMemory(guestAddress: UInt64, length: Int, host: UnsafeMutableRawPointer, readOnly: Bool = false) throws -> UInt32 {
        try slots.withLock { slots in
            let slot = MemorySlot(slot: UInt32(slots.count), guestAddress: guestAddress, length: length,
                                  hostAddress: UInt(bitPattern: host), readOnly: readOnly)
            try register(slot, logDirtyPages: false)
            slots.append(slot)
            return slot.slot
        }
    }

    /// Maps every region of `memory`; returns their slots in region order.
    @discardableResult
    public func mapMemory(_ memory: GuestMemory) throws -> [UInt32] {
        try memory.regions.map { try mapMemory(guestAddress: $0.guestAddress, length: $0.length, host: $0.host) }
    }

    /// The memory slots registered so far.
    public var memorySlots: [MemorySlot] { slots.withLock { $0 } }

    /// Turns KVM's dirty-page log on or off for every writable slot (KVM_MEM_LOG_DIRTY_PAGES: KVM
    /// write-protects the slot and notes each page the guest writes). Turning it on starts a clean log.
    public func setDirtyPageLogging(_ enabled: Bool) throws {
        try slots.withLock { slots in
            for slot in slots where !slot.readOnly { try register(slot, logDirtyPages: enabled) }
        }
    }

    /// The pages of `slot` the guest wrote since logging began or since the last call (KVM_GET_DIRTY_LOG
    /// reads and clears the log), one bit per page from the slot's start, in 64-bit words.
    public func takeDirtyLog(slot: MemorySlot) throws -> [UInt64] {
        let pages = (slot.length + GuestMemory.pageSize - 1) / GuestMemory.pageSize
        var bitmap = [UInt64](repeating: 0, count: (pages + 63) / 64)
        try bitmap.withUnsafeMutableBytes { bytes in
            var log = kvm_dirty_log()
            log.slot = slot.slot
            ckvm_dirty_log_set_bitmap(&log, bytes.baseAddress)
            try IOCTL.call(fd, CKVM_GET_DIRTY_LOG, "KVM_GET_DIRTY_LOG", &log)
        }
        return bitmap
    }

    private func register(_ slot: MemorySlot, logDirtyPages: Bool) throws {
        var flags: UInt32 = slot.readOnly ? UInt32(KVM_MEM_READONLY) : 0
        if logDirtyPages { flags |= CKVM_MEM_LOG_DIRTY_PAGES }
        var region = kvm_userspace_memory_region(slot: slot.slot, flags: flags, guest_phys_addr: slot.guestAddress,
                                                 memory_size: UInt64(slot.length), userspace_addr: UInt64(slot.hostAddress))
        try IOCTL.call(fd, CKVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region)
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
