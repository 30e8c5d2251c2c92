import CKVM

/// Puts the boot vCPU straight into 64-bit long mode with flat segments and an identity map of the
/// first 4 GiB, the state Linux's 64-bit boot protocol expects (Documentation/arch/x86/boot.rst,
/// "64-bit Boot Protocol") and the state flat test guests start in.
enum LongMode {
    // Control-register bits (Intel SDM Vol. 3A §2.5, §2.2.1).
    static let cr0ProtectionEnable: UInt64 = 1 << 0
    static let cr0ExtensionType: UInt64 = 1 << 4
    static let cr0Paging: UInt64 = 1 << 31
    static let cr4PhysicalAddressExtension: UInt64 = 1 << 5
    static let eferLongModeEnable: UInt64 = 1 << 8
    static let eferLongModeActive: UInt64 = 1 << 10
    // Page-table entry bits (SDM Vol. 3A §4.5, Table 4-15..4-19).
    static let pagePresent: UInt64 = 1 << 0
    static let pageWritable: UInt64 = 1 << 1
    static let pageSize2MiB: UInt64 = 1 << 7
    static let twoMiB: UInt64 = 2 << 20
    /// RFLAGS bit 1 is reserved and always set (SDM Vol. 1 §3.4.3).
    static let initialFlags: UInt64 = 0x2

    /// GDT selectors: null, 64-bit code, data, TSS (indices 1-3, 8 bytes each).
    static let codeSelector: UInt16 = 0x08
    static let dataSelector: UInt16 = 0x10
    static let taskSelector: UInt16 = 0x18
    /// A flat 32-bit code segment for PVH entry (protected mode, paging off).
    static let code32Selector: UInt16 = 0x20

    /// A segment descriptor for a flat segment; `flags` holds the access byte (bits 0-7) and the
    /// G/D/L/AVL nibble (bits 12-15), as in SDM Vol. 3A §3.4.5, Figure 3-8.
    static func descriptor(flags: UInt64, base: UInt64 = 0, limit: UInt64 = 0xfffff) -> UInt64 {
        ((base & 0xff00_0000) << 32) | ((flags & 0xf0ff) << 40) | ((limit & 0xf0000) << 32)
            | ((base & 0x00ff_ffff) << 16) | (limit & 0xffff)
    }

    static let gdt: [UInt64] = [
        0,
        descriptor(flags: 0xa09b), // present, ring 0, code execute/read accessed, L=1, G=1
        descriptor(flags: 0xc093), // present, ring 0, data read/write accessed, D/B=1, G=1
        descriptor(flags: 0x808b), // present, 64-bit busy TSS, G=1
        descriptor(flags: 0xc09b), // present, ring 0, code execute/read accessed, D=1, G=1 (32-bit)
    ]

    /// The KVM segment register matching GDT entry `selector`.
    static func segment(_ selector: UInt16) -> kvm_segment {
        let raw = gdt[Int(selector >> 3)]
        var segment = kvm_segment()
        segment.base = 0
        segment.limit = 0xffff_ffff // granularity 4 KiB over a 0xfffff limit
        segment.selector = selector
        segment.type = UInt8((raw >> 40) & 0xf)
        segment.present = UInt8((raw >> 47) & 1)
        segment.dpl = UInt8((raw >> 45) & 3)
        segment.db = UInt8((raw >> 54) & 1)
        segment.s = UInt8((raw >> 44) & 1)
        segment.l = UInt8((raw >> 53) & 1)
        segment.g = UInt8((raw >> 55) & 1)
        segment.avl = UInt8((raw >> 52) & 1)
        segment.unusable = 0
        return segment
    }

    /// Writes the GDT, an empty IDT and identity page tables into guest memory.
    static func writeTables(into memory: GuestMemory) throws {
        for (index, entry) in gdt.enumerated() {
            try memory.store(entry, at: GuestLayout.gdtAddress + UInt64(index * 8))
        }
        try memory.store(UInt64(0), at: GuestLayout.idtAddress)
        let tableFlags = pagePresent | pageWritable
        try memory.store(GuestLayout.pdptAddress | tableFlags, at: GuestLayout.pml4Address)
        for directory in 0..<GuestLayout.identityMappedGiB {
            let directoryAddress = GuestLayout.pageDirectoryAddress + UInt64(directory) * 0x1000
            try memory.store(directoryAddress | tableFlags, at: GuestLayout.pdptAddress + UInt64(directory * 8))
            for entry in 0..<512 {
                let physical = (UInt64(directory) * 512 + UInt64(entry)) * twoMiB
                try memory.store(physical | tableFlags | pageSize2MiB, at: directoryAddress + UInt64(entry * 8))
            }
        }
    }

    /// Special registers for 64-bit mode, starting from what KVM reports for the vCPU.
    static func specialRegisters(from initial: kvm_sregs) -> kvm_sregs {
        var sregs = initial
        sregs.gdt.base = GuestLayout.gdtAddress
        sregs.gdt.limit = UInt16(gdt.count * 8 - 1)
        sregs.idt.base = GuestLayout.idtAddress
        sregs.idt.limit = 7
        sregs.cs = segment(codeSelector)
        let data = segment(dataSelector)
        sregs.ds = data
        sregs.es = data
        sregs.fs = data
        sregs.gs = data
        sregs.ss = data
        sregs.tr = segment(taskSelector)
        sregs.cr0 = cr0ProtectionEnable | cr0ExtensionType | cr0Paging
        sregs.cr3 = GuestLayout.pml4Address
        sregs.cr4 = cr4PhysicalAddressExtension
        sregs.efer = eferLongModeEnable | eferLongModeActive
        return sregs
    }

    /// Special registers for the PVH entry: flat 32-bit protected mode, paging off (Xen PVH ABI,
    /// docs/misc/pvh.pandoc: "CR0: PE set, PG clear; CS/DS/ES/SS: flat 32-bit").
    static func protectedModeRegisters(from initial: kvm_sregs) -> kvm_sregs {
        var sregs = specialRegisters(from: initial)
        sregs.cs = segment(code32Selector)
        sregs.cr0 = cr0ProtectionEnable | cr0ExtensionType
        sregs.cr3 = 0
        sregs.cr4 = 0
        sregs.efer = 0
        return sregs
    }

    /// General registers: entry point, boot stack, and `rsi`/`rdi` as the boot protocol wants.
    static func registers(entry: UInt64, rsi: UInt64, rdi: UInt64 = 0, rdx: UInt64 = 0) -> kvm_regs {
        var regs = kvm_regs()
        regs.rflags = initialFlags
        regs.rip = entry
        regs.rsp = GuestLayout.bootStackPointer
        regs.rbp = GuestLayout.bootStackPointer
        regs.rsi = rsi
        regs.rdi = rdi
        regs.rdx = rdx
        return regs
    }
}
