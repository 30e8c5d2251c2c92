import CKVM
import Glibc

/// The state-saving ioctls of a vCPU (api.rst: KVM_GET_/SET_FPU, XSAVE, XCRS, DEBUGREGS, MP_STATE,
/// LAPIC, VCPU_EVENTS, MSRS), for snapshots. Each getter returns the kernel's struct unchanged.
extension VCPU {
    public func fpu() throws -> kvm_fpu { try get(CKVM_GET_FPU, "KVM_GET_FPU") }
    public func setFPU(_ value: kvm_fpu) throws { try set(CKVM_SET_FPU, "KVM_SET_FPU", value) }
    public func xsave() throws -> kvm_xsave { try get(CKVM_GET_XSAVE, "KVM_GET_XSAVE") }
    public func setXSAVE(_ value: kvm_xsave) throws { try set(CKVM_SET_XSAVE, "KVM_SET_XSAVE", value) }
    public func xcrs() throws -> kvm_xcrs { try get(CKVM_GET_XCRS, "KVM_GET_XCRS") }
    public func setXCRS(_ value: kvm_xcrs) throws { try set(CKVM_SET_XCRS, "KVM_SET_XCRS", value) }
    public func debugRegisters() throws -> kvm_debugregs { try get(CKVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS") }
    public func setDebugRegisters(_ value: kvm_debugregs) throws { try set(CKVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", value) }
    public func multiprocessingState() throws -> kvm_mp_state { try get(CKVM_GET_MP_STATE, "KVM_GET_MP_STATE") }
    public func setMultiprocessingState(_ value: kvm_mp_state) throws { try set(CKVM_SET_MP_STATE, "KVM_SET_MP_STATE", value) }
    public func localAPIC() throws -> kvm_lapic_state { try get(CKVM_GET_LAPIC, "KVM_GET_LAPIC") }
    public func setLocalAPIC(_ value: kvm_lapic_state) throws { try set(CKVM_SET_LAPIC, "KVM_SET_LAPIC", value) }
    public func events() throws -> kvm_vcpu_events { try get(CKVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS") }
    public func setEvents(_ value: kvm_vcpu_events) throws { try set(CKVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", value) }

    /// Reads the MSRs in `indices`; returns only those KVM could read (KVM_GET_MSRS stops at the
    /// first it cannot, so the rest are retried one by one).
    public func readMSRs(_ indices: [UInt32]) throws -> [(index: UInt32, value: UInt64)] {
        var result: [(index: UInt32, value: UInt64)] = []
        var remaining = indices[...]
        while !remaining.isEmpty {
            let batch = Array(remaining)
            let bytes = MemoryLayout<kvm_msrs>.size + batch.count * MemoryLayout<kvm_msr_entry>.stride
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            let header = buffer.bindMemory(to: kvm_msrs.self, capacity: 1)
            header.pointee.nmsrs = UInt32(batch.count)
            let table = ckvm_msrs_entries(header)!
            for (offset, index) in batch.enumerated() { table[offset].index = index }
            let read = Int(try IOCTL.call(fd, CKVM_GET_MSRS, "KVM_GET_MSRS", buffer))
            for offset in 0..<read { result.append((table[offset].index, table[offset].data)) }
            remaining = remaining.dropFirst(read + 1) // skip the one KVM refused
        }
        return result
    }

    /// Completes an instruction whose exit the VMM already handled (port or MMIO read data, a
    /// string I/O step) without running guest code further: KVM_RUN with immediate_exit set
    /// (api.rst, "immediate_exit"). Required before saving state, or the saved RIP would repeat or
    /// lose the access.
    public func completePendingExit() throws {
        requestImmediateExit()
        let result = ckvm_ioctl_value(fd, CKVM_RUN, 0)
        let error = errno
        requestImmediateExit(false)
        guard result < 0, error == EINTR || error == EAGAIN else {
            if result < 0 { throw KVMError(ioctl: "KVM_RUN (immediate exit)", errno: error) }
            throw HypervisorError.invalidConfiguration("vCPU \(index) ran guest code while being paused")
        }
    }

    private func get<T>(_ request: UInt, _ name: String) throws -> T {
        let storage = UnsafeMutablePointer<T>.allocate(capacity: 1)
        defer { storage.deallocate() }
        UnsafeMutableRawPointer(storage).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.size)
        try IOCTL.call(fd, request, name, UnsafeMutableRawPointer(storage))
        return storage.move()
    }

    private func set<T>(_ request: UInt, _ name: String, _ value: T) throws {
        let storage = UnsafeMutablePointer<T>.allocate(capacity: 1)
        defer { storage.deallocate() }
        storage.initialize(to: value)
        try IOCTL.call(fd, request, name, UnsafeMutableRawPointer(storage))
    }
}

/// The VM-wide state ioctls: in-kernel PIC/IOAPIC (KVM_GET/SET_IRQCHIP), PIT (KVM_GET/SET_PIT2) and
/// kvmclock (KVM_GET/SET_CLOCK).
extension VirtualMachine {
    /// Chip ids of KVM_GET_IRQCHIP (api.rst): PIC master, PIC slave, IOAPIC.
    public static let irqchipIDs: [UInt32] = [CKVM_IRQCHIP_PIC_MASTER, CKVM_IRQCHIP_PIC_SLAVE, CKVM_IRQCHIP_IOAPIC]

    public func irqchip(_ id: UInt32) throws -> kvm_irqchip {
        var chip = kvm_irqchip()
        chip.chip_id = id
        try IOCTL.call(fd, CKVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", &chip)
        return chip
    }

    public func setIRQChip(_ chip: kvm_irqchip) throws {
        var value = chip
        try IOCTL.call(fd, CKVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", &value)
    }

    public func pit() throws -> kvm_pit_state2 {
        var value = kvm_pit_state2()
        try IOCTL.call(fd, CKVM_GET_PIT2, "KVM_GET_PIT2", &value)
        return value
    }

    public func setPIT(_ state: kvm_pit_state2) throws {
        var value = state
        try IOCTL.call(fd, CKVM_SET_PIT2, "KVM_SET_PIT2", &value)
    }

    public func clock() throws -> kvm_clock_data {
        var value = kvm_clock_data()
        try IOCTL.call(fd, CKVM_GET_CLOCK, "KVM_GET_CLOCK", &value)
        return value
    }

    /// Sets kvmclock; only the clock value is restored (flags cleared: KVM_CLOCK_REALTIME would ask
    /// KVM to advance it by the wall-clock time spent suspended, which a published snapshot must not).
    public func setClock(_ state: kvm_clock_data) throws {
        var value = kvm_clock_data()
        value.clock = state.clock
        try IOCTL.call(fd, CKVM_SET_CLOCK, "KVM_SET_CLOCK", &value)
    }
}

extension KVMSystem {
    /// MSRs KVM can save and restore for a guest (KVM_GET_MSR_INDEX_LIST: hardware MSRs it
    /// virtualises plus its emulated ones, such as kvmclock's).
    public func msrIndexList() throws -> [UInt32] {
        var capacity = 256
        while true {
            let bytes = MemoryLayout<UInt32>.size * (capacity + 1)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
            defer { buffer.deallocate() }
            buffer.storeBytes(of: UInt32(capacity), as: UInt32.self)
            do {
                try IOCTL.call(fd, CKVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST", buffer)
            } catch let error as KVMError where error.errno == E2BIG && capacity < 65536 {
                capacity = max(capacity * 2, Int(buffer.load(as: UInt32.self)))
                continue
            }
            let count = Int(buffer.load(as: UInt32.self))
            return (0..<count).map { buffer.load(fromByteOffset: 4 + $0 * 4, as: UInt32.self) }
        }
    }
}
