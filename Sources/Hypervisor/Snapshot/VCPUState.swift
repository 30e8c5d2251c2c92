import CKVM
import Foundation

/// Everything KVM holds for one vCPU, as saved in vmstate.json: general and special registers,
/// FPU and XSAVE area, XCR0, debug registers, multiprocessing state, local APIC, pending events,
/// MSRs and the CPUID table the guest saw. Kernel structs are kept as raw bytes (`KernelBlob`).
public struct VCPUState: Codable, Sendable, Equatable {
    public struct MSR: Codable, Sendable, Equatable {
        public var index: UInt32
        public var value: UInt64
    }

    public var registers: Data
    public var specialRegisters: Data
    public var fpu: Data
    /// Absent when this host's KVM cannot save XSAVE state (then `fpu` carries x87/SSE).
    public var xsave: Data?
    public var xcrs: Data?
    public var debugRegisters: Data?
    public var multiprocessingState: Data
    public var localAPIC: Data
    public var events: Data
    /// MSRs KVM listed, could read, and accepted back (unrestorable ones are left out at save time).
    public var msrs: [MSR]
    /// CPUID entries as [function, index, flags, eax, ebx, ecx, edx].
    public var cpuid: [[UInt32]]

    /// KVM_VCPUEVENT_VALID_* bits (linux/kvm.h) that ask KVM to take the pending-NMI and SIPI vector
    /// fields from the saved events too.
    static let eventsRestoreFlags = UInt32(KVM_VCPUEVENT_VALID_NMI_PENDING) | UInt32(KVM_VCPUEVENT_VALID_SIPI_VECTOR)

    /// IA32_TIME_STAMP_COUNTER (SDM Vol. 4): KVM always takes it back from the host, and writing
    /// the value read a moment ago would set the guest's TSC back by that moment (unless KVM's
    /// TSC-synchronisation heuristic absorbs it), which a paused machine that resumes after the
    /// snapshot would see as time running backwards.
    static let timeStampCounterMSR: UInt32 = 0x10

    /// Reads the state of a paused vCPU (parked, or its run loop has returned, with its pending exit completed).
    static func capture(_ vcpu: VCPU, msrIndices: [UInt32], cpuid: [CPUIDEntry]) throws -> VCPUState {
        let readable = try vcpu.readMSRs(msrIndices)
        // Keep only MSRs KVM takes back: writing the value just read leaves a paused vCPU unchanged
        // (the TSC aside, which is not probed).
        let restorable = readable.filter { $0.index == Self.timeStampCounterMSR || (try? vcpu.setMSRs([$0])) != nil }
        return VCPUState(
            registers: KernelBlob.encode(try vcpu.registers()),
            specialRegisters: KernelBlob.encode(try vcpu.specialRegisters()),
            fpu: KernelBlob.encode(try vcpu.fpu()),
            xsave: (try? vcpu.xsave()).map(KernelBlob.encode),
            xcrs: (try? vcpu.xcrs()).map(KernelBlob.encode),
            debugRegisters: (try? vcpu.debugRegisters()).map(KernelBlob.encode),
            multiprocessingState: KernelBlob.encode(try vcpu.multiprocessingState()),
            localAPIC: KernelBlob.encode(try vcpu.localAPIC()),
            events: KernelBlob.encode(try vcpu.events()),
            msrs: restorable.map { MSR(index: $0.index, value: $0.value) },
            cpuid: cpuid.map { [$0.function, $0.index, $0.flags, $0.eax, $0.ebx, $0.ecx, $0.edx] })
    }

    /// Checks every blob has this host's struct size and the CPUID rows are complete.
    func validate(vcpu index: Int) throws {
        let field = "vcpu \(index)"
        _ = try KernelBlob.decode(registers, as: kvm_regs.self, field: "\(field) registers")
        _ = try KernelBlob.decode(specialRegisters, as: kvm_sregs.self, field: "\(field) special registers")
        _ = try KernelBlob.decode(fpu, as: kvm_fpu.self, field: "\(field) FPU")
        if let xsave { _ = try KernelBlob.decode(xsave, as: kvm_xsave.self, field: "\(field) XSAVE") }
        if let xcrs { _ = try KernelBlob.decode(xcrs, as: kvm_xcrs.self, field: "\(field) XCRs") }
        if let debugRegisters { _ = try KernelBlob.decode(debugRegisters, as: kvm_debugregs.self, field: "\(field) debug registers") }
        _ = try KernelBlob.decode(multiprocessingState, as: kvm_mp_state.self, field: "\(field) MP state")
        _ = try KernelBlob.decode(localAPIC, as: kvm_lapic_state.self, field: "\(field) local APIC")
        _ = try KernelBlob.decode(events, as: kvm_vcpu_events.self, field: "\(field) events")
        guard !cpuid.isEmpty, cpuid.allSatisfy({ $0.count == 7 }) else {
            throw HypervisorError.invalidSnapshot("\(field) CPUID table is empty or has rows that are not 7 values")
        }
    }

    /// The CPUID table the vCPU had: a resumed guest keeps what it was told (its TSC frequency too).
    public var cpuidEntries: [CPUIDEntry] {
        cpuid.map { CPUIDEntry(function: $0[0], index: $0[1], flags: $0[2], eax: $0[3], ebx: $0[4], ecx: $0[5], edx: $0[6]) }
    }

    /// Loads this state into a fresh vCPU, in the order Firecracker's restore uses (CPUID first,
    /// LAPIC before MSRs so the TSC deadline MSR lands, events last).
    func apply(to vcpu: VCPU) throws {
        try validate(vcpu: vcpu.index)
        try vcpu.setCPUID(cpuidEntries)
        try vcpu.setMultiprocessingState(try KernelBlob.decode(multiprocessingState, as: kvm_mp_state.self, field: "MP state"))
        try vcpu.setRegisters(try KernelBlob.decode(registers, as: kvm_regs.self, field: "registers"))
        try vcpu.setSpecialRegisters(try KernelBlob.decode(specialRegisters, as: kvm_sregs.self, field: "special registers"))
        try vcpu.setFPU(try KernelBlob.decode(fpu, as: kvm_fpu.self, field: "FPU"))
        if let xsave { try vcpu.setXSAVE(try KernelBlob.decode(xsave, as: kvm_xsave.self, field: "XSAVE")) }
        if let xcrs { try vcpu.setXCRS(try KernelBlob.decode(xcrs, as: kvm_xcrs.self, field: "XCRs")) }
        if let debugRegisters { try vcpu.setDebugRegisters(try KernelBlob.decode(debugRegisters, as: kvm_debugregs.self, field: "debug registers")) }
        try vcpu.setLocalAPIC(try KernelBlob.decode(localAPIC, as: kvm_lapic_state.self, field: "local APIC"))
        if !msrs.isEmpty {
            do {
                try vcpu.setMSRs(msrs.map { ($0.index, $0.value) })
            } catch {
                throw HypervisorError.invalidSnapshot("this host's KVM refused the snapshot's MSRs: \(error)")
            }
        }
        var events = try KernelBlob.decode(events, as: kvm_vcpu_events.self, field: "events")
        events.flags |= Self.eventsRestoreFlags
        try vcpu.setEvents(events)
    }
}
