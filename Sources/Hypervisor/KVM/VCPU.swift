import CKVM
import Glibc

/// A vCPU file descriptor and its shared `kvm_run` page. A VCPU is driven by exactly one thread
/// (its run loop); other threads may only `kick` it.
public final class VCPU: @unchecked Sendable {
    public let index: Int
    let fd: Int32
    private let run: UnsafeMutablePointer<kvm_run>
    private let mapSize: Int
    unowned let machine: VirtualMachine

    init(fd: Int32, index: Int, mapSize: Int, machine: VirtualMachine) throws {
        let mapping = mmap(nil, mapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let mapping, mapping != MAP_FAILED else {
            let error = errno
            close(fd)
            throw HypervisorError.system(call: "mmap(kvm_run)", errno: error)
        }
        self.fd = fd
        self.index = index
        self.mapSize = mapSize
        self.machine = machine
        run = mapping.bindMemory(to: kvm_run.self, capacity: 1)
    }

    deinit {
        munmap(run, mapSize)
        close(fd)
    }

    public func registers() throws -> kvm_regs {
        var value = kvm_regs()
        try IOCTL.call(fd, CKVM_GET_REGS, "KVM_GET_REGS", &value)
        return value
    }

    public func setRegisters(_ registers: kvm_regs) throws {
        var value = registers
        try IOCTL.call(fd, CKVM_SET_REGS, "KVM_SET_REGS", &value)
    }

    public func specialRegisters() throws -> kvm_sregs {
        var value = kvm_sregs()
        try IOCTL.call(fd, CKVM_GET_SREGS, "KVM_GET_SREGS", &value)
        return value
    }

    public func setSpecialRegisters(_ registers: kvm_sregs) throws {
        var value = registers
        try IOCTL.call(fd, CKVM_SET_SREGS, "KVM_SET_SREGS", &value)
    }

    /// Sets the FPU to its power-on state (FCW 0x37f, MXCSR 0x1f80: Intel SDM Vol. 1 §8.1.5, §10.2.3).
    public func resetFPU() throws {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37f
        fpu.mxcsr = 0x1f80
        try IOCTL.call(fd, CKVM_SET_FPU, "KVM_SET_FPU", &fpu)
    }

    /// Installs the CPUID table this vCPU reports.
    /// The frequency this vCPU's TSC counts at, in kHz (KVM_GET_TSC_KHZ).
    public func tscKHz() throws -> Int {
        Int(try IOCTL.call(fd, CKVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0))
    }

    public func setCPUID(_ entries: [CPUIDEntry]) throws {
        let bytes = MemoryLayout<kvm_cpuid2>.size + entries.count * MemoryLayout<kvm_cpuid_entry2>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        let cpuid = buffer.bindMemory(to: kvm_cpuid2.self, capacity: 1)
        cpuid.pointee.nent = UInt32(entries.count)
        let table = ckvm_cpuid2_entries(cpuid)!
        for (offset, entry) in entries.enumerated() { table[offset] = entry.kvmValue }
        try IOCTL.call(fd, CKVM_SET_CPUID2, "KVM_SET_CPUID2", buffer)
    }

    /// Writes model-specific registers (index, value) pairs.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws {
        let bytes = MemoryLayout<kvm_msrs>.size + msrs.count * MemoryLayout<kvm_msr_entry>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        let header = buffer.bindMemory(to: kvm_msrs.self, capacity: 1)
        header.pointee.nmsrs = UInt32(msrs.count)
        let table = ckvm_msrs_entries(header)!
        for (offset, msr) in msrs.enumerated() {
            table[offset].index = msr.index
            table[offset].data = msr.value
        }
        let written = try IOCTL.call(fd, CKVM_SET_MSRS, "KVM_SET_MSRS", buffer)
        guard written == msrs.count else {
            throw HypervisorError.unsupportedHost("KVM_SET_MSRS accepted \(written) of \(msrs.count) MSRs (first refused: 0x\(String(msrs[Int(written)].index, radix: 16)))")
        }
    }

    /// Local APIC LVT registers (SDM Vol. 3A §10.5.1, Figure 10-8): offsets in the APIC page and
    /// the delivery-mode field (bits 8-10).
    static let lvtLINT0Offset = 0x350
    static let lvtLINT1Offset = 0x360
    static let deliveryModeMask: UInt32 = 0x700
    static let deliveryModeExtINT: UInt32 = 0x700
    static let deliveryModeNMI: UInt32 = 0x400

    /// Wires LINT0 to the 8259 PIC (ExtINT) and LINT1 to NMI, the "virtual wire" setup PC firmware
    /// leaves and the MP table's local interrupt entries describe.
    public func configureLocalInterrupts() throws {
        var lapic = kvm_lapic_state()
        try IOCTL.call(fd, CKVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic)
        withUnsafeMutableBytes(of: &lapic.regs) { registers in
            for (offset, mode) in [(Self.lvtLINT0Offset, Self.deliveryModeExtINT), (Self.lvtLINT1Offset, Self.deliveryModeNMI)] {
                let value = registers.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                registers.storeBytes(of: (value & ~Self.deliveryModeMask) | mode, toByteOffset: offset, as: UInt32.self)
            }
        }
        try IOCTL.call(fd, CKVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic)
    }

    /// Queues exception `vector` for delivery on the next entry (used to complete an `int3` that the
    /// host failed to emulate).
    public func injectException(vector: UInt8) throws {
        var events = kvm_vcpu_events()
        try IOCTL.call(fd, CKVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &events)
        ckvm_events_inject_exception(&events, vector)
        try IOCTL.call(fd, CKVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &events)
    }

    /// Enters the guest until the next exit. EINTR (a kick) is returned as `.interrupted`, not retried,
    /// so the run loop can notice stop requests.
    public func runOnce() throws -> VCPUExit {
        let result = ckvm_ioctl_value(fd, CKVM_RUN, 0)
        if result < 0 {
            let error = errno
            if error == EINTR || error == EAGAIN {
                ckvm_run_set_immediate_exit(run, 0)
                return .interrupted
            }
            throw KVMError(ioctl: "KVM_RUN", errno: error)
        }
        return VCPUExit.decode(run)
    }

    /// Supplies the bytes for the `portIn`/`mmioRead` exit just returned, before the next `runOnce`.
    public func completeRead(_ bytes: [UInt8]) {
        switch Int32(ckvm_run_exit_reason(run)) {
        case KVM_EXIT_IO:
            let start = UnsafeMutableRawPointer(run) + Int(ckvm_run_io_data_offset(run))
            let capacity = Int(ckvm_run_io_size(run)) * Int(ckvm_run_io_count(run))
            let destination = UnsafeMutableRawBufferPointer(start: start, count: capacity)
            for offset in 0..<capacity { destination[offset] = offset < bytes.count ? bytes[offset] : 0xff }
        case KVM_EXIT_MMIO:
            let capacity = min(Int(ckvm_run_mmio_len(run)), 8)
            let destination = UnsafeMutableRawBufferPointer(start: ckvm_run_mmio_data(run), count: capacity)
            for offset in 0..<capacity { destination[offset] = offset < bytes.count ? bytes[offset] : 0xff }
        default:
            break
        }
    }

    /// Makes a concurrent or upcoming KVM_RUN return promptly (api.rst, "immediate_exit"); the caller
    /// also signals the vCPU thread so a guest already running is interrupted.
    func requestImmediateExit(_ value: Bool = true) {
        ckvm_run_set_immediate_exit(run, value ? 1 : 0)
    }
}
