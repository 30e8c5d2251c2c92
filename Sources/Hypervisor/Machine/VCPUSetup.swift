import CKVM

/// Per-vCPU state set before the first entry: CPUID, MSRs, FPU, and for the boot vCPU the entry state.
enum VCPUSetup {
    /// MSRs reset to the values Linux expects from firmware (Intel SDM Vol. 4 for the indices).
    static let bootMSRs: [(index: UInt32, value: UInt64)] = [
        (0x174, 0), // IA32_SYSENTER_CS
        (0x175, 0), // IA32_SYSENTER_ESP
        (0x176, 0), // IA32_SYSENTER_EIP
        (0xc000_0081, 0), // IA32_STAR
        (0xc000_0082, 0), // IA32_LSTAR
        (0xc000_0083, 0), // IA32_CSTAR
        (0xc000_0084, 0), // IA32_FMASK
        (0xc000_0102, 0), // IA32_KERNEL_GS_BASE
        (0x10, 0), // IA32_TIME_STAMP_COUNTER
        (0x1a0, 1), // IA32_MISC_ENABLE: fast-string operations enabled
        (0x2ff, (1 << 11) | 6), // IA32_MTRR_DEF_TYPE: MTRRs enabled, default write-back (SDM Vol. 3A §11.11.2.1)
    ]

    /// Configures `vcpu`; returns the MSR indices this host refused (worth a log line, not fatal).
    static func configure(_ vcpu: VCPU, cpuid: [CPUIDEntry], entry: BootEntry?) throws -> [UInt32] {
        try vcpu.setCPUID(cpuid)
        var refused: [UInt32] = []
        for msr in bootMSRs {
            do { try vcpu.setMSRs([msr]) } catch { refused.append(msr.index) }
        }
        try vcpu.resetFPU()
        guard let entry else { return refused } // application processors wait for INIT/SIPI
        let initial = try vcpu.specialRegisters()
        var regs = LongMode.registers(entry: entry.instructionPointer, rsi: entry.rsi, rdi: entry.rdi)
        switch entry.mode {
        case .longMode:
            try vcpu.setSpecialRegisters(LongMode.specialRegisters(from: initial))
        case .pvh:
            try vcpu.setSpecialRegisters(LongMode.protectedModeRegisters(from: initial))
            regs.rbx = entry.rbx
        }
        try vcpu.setRegisters(regs)
        return refused
    }
}
