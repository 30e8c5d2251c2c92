/// Where the VMM puts boot structures in guest-physical memory. The low addresses follow the
/// conventions Linux and Firecracker use, all below the 640 KiB EBDA boundary.
public enum GuestLayout {
    /// GDT and (empty) IDT used to enter long mode.
    public static let gdtAddress: UInt64 = 0x500
    public static let idtAddress: UInt64 = 0x520
    /// Linux "zero page" (struct boot_params), passed in RSI (Documentation/arch/x86/boot.rst §64-bit Boot Protocol).
    public static let bootParamsAddress: UInt64 = 0x7000
    /// Initial stack of the boot vCPU, growing down from just below the page tables.
    public static let bootStackPointer: UInt64 = 0x8ff0
    /// Identity-mapping page tables: PML4, one PDPT, four page directories (4 GiB in 2 MiB pages).
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xa000
    public static let pageDirectoryAddress: UInt64 = 0xb000
    public static let identityMappedGiB = 4
    /// PVH start_info and its memory map (Xen PVH ABI, arch-x86/hvm/start_info.h).
    public static let pvhStartInfoAddress: UInt64 = 0x6000
    public static let pvhMemoryMapAddress: UInt64 = 0x6100
    public static let pvhModuleListAddress: UInt64 = 0x6f00
    /// Kernel command line (boot.rst recommends below the EBDA, after the setup heap).
    public static let commandLineAddress: UInt64 = 0x20000
    public static let commandLineCapacity = 0x10000
    /// Start of the Extended BIOS Data Area; the MP table lives here where Linux searches for it
    /// (MultiProcessor Specification 1.4 §4: "first kilobyte of the EBDA").
    public static let ebdaStart: UInt64 = 0x9fc00
    /// Legacy VGA/BIOS hole [640 KiB, 1 MiB): never RAM on a PC.
    public static let lowMemoryEnd: UInt64 = 0xa0000
    /// Kernels and flat guests load at 1 MiB ("HIMEM", boot.rst: protected-mode kernel at 0x100000).
    public static let kernelLoadAddress: UInt64 = 0x100000
    /// Virtio-mmio device windows start here, inside the 32-bit MMIO hole.
    public static let virtioMMIOBase: UInt64 = 0xd000_0000
    public static let virtioMMIOStride: UInt64 = 0x1000
    /// First GSI for virtio-mmio devices (ISA IRQs 0-4 and 8 are taken by PIT, keyboard, cascade, COM, RTC).
    public static let virtioFirstGSI: UInt32 = 5
    /// Local APIC and IOAPIC default addresses (Intel SDM Vol. 3A §10.4.1; 82093AA datasheet).
    public static let localAPICAddress: UInt32 = 0xfee0_0000
    public static let ioAPICAddress: UInt32 = 0xfec0_0000
}
