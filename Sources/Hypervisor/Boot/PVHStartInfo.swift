/// The PVH boot ABI's `hvm_start_info` and memory map (Xen public/arch-x86/hvm/start_info.h), the
/// structures a PVH-capable ELF kernel reads from the address in EBX at its 32-bit entry.
struct PVHStartInfo {
    static let magic: UInt32 = 0x336e_c578
    /// Version 1 adds the memory map fields.
    static let version: UInt32 = 1
    static let startInfoSize = 56
    static let memoryMapEntrySize = 24
    static let moduleEntrySize = 32

    var commandLineAddress: UInt64
    var memoryMapAddress: UInt64
    var memoryMap: [E820Entry]
    var moduleListAddress: UInt64
    /// (address, size) of the initrd, passed as the first module.
    var ramdisk: (address: UInt64, size: UInt64)?

    var startInfoBytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes += MPTable.littleEndian(Self.magic) + MPTable.littleEndian(Self.version)
        bytes += MPTable.littleEndian(UInt32(0)) // flags
        bytes += MPTable.littleEndian(UInt32(ramdisk == nil ? 0 : 1))
        bytes += MPTable.littleEndian(ramdisk == nil ? UInt64(0) : moduleListAddress)
        bytes += MPTable.littleEndian(commandLineAddress)
        bytes += MPTable.littleEndian(UInt64(0)) // rsdp_paddr: no ACPI
        bytes += MPTable.littleEndian(memoryMapAddress)
        bytes += MPTable.littleEndian(UInt32(memoryMap.count)) + MPTable.littleEndian(UInt32(0))
        return bytes
    }

    var memoryMapBytes: [UInt8] {
        memoryMap.flatMap { entry in
            MPTable.littleEndian(entry.address) + MPTable.littleEndian(entry.size)
                + MPTable.littleEndian(entry.kind.rawValue) + MPTable.littleEndian(UInt32(0))
        }
    }

    var moduleListBytes: [UInt8] {
        guard let ramdisk else { return [] }
        return MPTable.littleEndian(ramdisk.address) + MPTable.littleEndian(ramdisk.size)
            + MPTable.littleEndian(UInt64(0)) + MPTable.littleEndian(UInt64(0))
    }
}
