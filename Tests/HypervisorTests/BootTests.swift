import Testing
@testable import Hypervisor

/// A minimal bzImage: 4 setup sectors with a boot-protocol 2.15 header, then a "protected-mode
/// kernel" of recognisable bytes (field offsets from boot.rst).
func syntheticBzImage(payload: [UInt8] = Array(repeating: 0x90, count: 8192), initSize: UInt32 = 0x10000) -> [UInt8] {
    var image = [UInt8](repeating: 0, count: 5 * 512)
    func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { image.replaceSubrange(offset..<(offset + $0.count), with: $0) }
    }
    image[0x1f1] = 4 // setup_sects
    put(UInt16(0xaa55), 0x1fe)
    image[0x200] = 0xeb
    image[0x201] = 0x66 // jump: header ends at 0x268
    put(UInt32(0x5372_6448), 0x202)
    put(UInt16(0x020f), 0x206)
    image[0x211] = 0x01 // LOADED_HIGH
    put(UInt32(0x7fff_ffff), 0x22c) // initrd_addr_max
    put(UInt32(0x20_0000), 0x230) // kernel_alignment
    put(UInt16(0x3), 0x236) // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    put(UInt32(2048), 0x238) // cmdline_size
    put(initSize, 0x260)
    return image + payload
}

/// A minimal ELF64 x86-64 executable with one PT_LOAD and, optionally, a Xen PVH entry note.
func syntheticELF(entry: UInt64 = 0x100_0000, loadAddress: UInt64 = 0x100_0000, code: [UInt8], bss: Int, pvhEntry: UInt32?) -> [UInt8] {
    var file = [UInt8](repeating: 0, count: 0x200)
    func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { file.replaceSubrange(offset..<(offset + $0.count), with: $0) }
    }
    file.replaceSubrange(0..<4, with: [0x7f, 0x45, 0x4c, 0x46])
    file[4] = 2; file[5] = 1; file[6] = 1
    put(UInt16(2), 16); put(UInt16(62), 18); put(UInt32(1), 20)
    put(entry, 24); put(UInt64(64), 32)
    put(UInt16(64), 52); put(UInt16(56), 54); put(UInt16(pvhEntry == nil ? 1 : 2), 56)
    let codeOffset = 0x200
    // PT_LOAD
    put(UInt32(1), 64); put(UInt32(5), 68); put(UInt64(codeOffset), 72)
    put(loadAddress | 0xffff_ffff_8000_0000, 80); put(loadAddress, 88)
    put(UInt64(code.count), 96); put(UInt64(code.count + bss), 104)
    if let pvhEntry {
        // PT_NOTE at 0x180: namesz 4 ("Xen\0"), descsz 4, type 18.
        put(UInt32(4), 120); put(UInt64(0x180), 128); put(UInt64(0x180), 144); put(UInt64(20), 152)
        put(UInt32(4), 0x180); put(UInt32(4), 0x184); put(UInt32(18), 0x188)
        file.replaceSubrange(0x18c..<0x190, with: Array("Xen\0".utf8))
        put(pvhEntry, 0x190)
    }
    return file + code
}

struct BootParamsTests {
    @Test func fieldsLandAtTheDocumentedOffsets() throws {
        var params = BootParams()
        params.setCommandLine(address: 0x20000, size: 42)
        params.setRamdisk(address: 0x1_2345_6000, size: 0x10_0000)
        try params.setMemoryMap([E820Entry(address: 0, size: 0x9fc00, kind: .ram),
                                 E820Entry(address: 0x100000, size: 0x7f0_0000, kind: .ram)])
        let bytes = params.bytes
        #expect(bytes.count == 4096)
        func u32(_ offset: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) } }
        func u64(_ offset: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) } }
        #expect(u32(0x228) == 0x20000) // cmd_line_ptr
        #expect(u32(0x238) == 42) // cmdline_size
        #expect(u32(0x218) == 0x2345_6000) // ramdisk_image
        #expect(u32(0x0c0) == 0x1) // ext_ramdisk_image
        #expect(u32(0x21c) == 0x10_0000) // ramdisk_size
        #expect(bytes[0x1e8] == 2) // e820_entries
        #expect(u64(0x2d0 + 20) == 0x100000)
        #expect(u64(0x2d0 + 28) == 0x7f0_0000)
        #expect(u32(0x2d0 + 36) == 1)
        #expect(bytes[0x210] == 0xff) // type_of_loader
        #expect(u32(0x202) == 0x5372_6448) // HdrS
        #expect(bytes[0x1fe] == 0x55 && bytes[0x1ff] == 0xaa)
        #expect(bytes[0x211] & 0x81 == 0x81) // LOADED_HIGH | CAN_USE_HEAP
    }

    @Test func refusesTooManyMemoryMapEntries() {
        var params = BootParams()
        #expect(throws: HypervisorError.self) {
            try params.setMemoryMap(Array(repeating: E820Entry(address: 0, size: 1, kind: .ram), count: 129))
        }
    }

    @Test func loadsABzImageWithInitrdAndCommandLine() throws {
        let memory = try GuestMemory(size: 64 << 20)
        let payload = (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 3) }
        let initrd = [UInt8](repeating: 0x17, count: 10_000)
        let entry = try BootLoader.load(.linux(kernel: syntheticBzImage(payload: payload), initrd: initrd),
                                        commandLine: "console=ttyS0 quiet", vcpuCount: 2, into: memory)
        #expect(entry.mode == .longMode)
        #expect(entry.instructionPointer == 0x100200)
        #expect(entry.rsi == GuestLayout.bootParamsAddress)
        #expect(try memory.read(at: 0x100000, length: 8192) == payload)
        let params = BootParams(copying: try memory.read(at: GuestLayout.bootParamsAddress, length: 4096))
        #expect(params.commandLinePointer == 0x20000)
        #expect(try memory.read(at: 0x20000, length: 20) == Array("console=ttyS0 quiet\0".utf8))
        #expect(params.ramdiskSize == 10_000)
        #expect(params.ramdiskImage % 4096 == 0)
        #expect(UInt64(params.ramdiskImage) + 10_000 <= 64 << 20)
        #expect(try memory.read(at: UInt64(params.ramdiskImage), length: 10_000) == initrd)
        #expect(params.e820Entry(0) == E820Entry(address: 0, size: 0x9fc00, kind: .ram))
        #expect(params.e820Entry(2) == E820Entry(address: 0xe0000, size: 0x20000, kind: .reserved))
        #expect(params.e820Entry(3) == E820Entry(address: 0x100000, size: (64 << 20) - 0x100000, kind: .ram))
        #expect(params.get(UInt16.self, at: 0x206) == 0x020f) // header copied from the image
    }

    @Test func refusesOldProtocolsAndOversizedCommandLines() throws {
        let memory = try GuestMemory(size: 64 << 20)
        var old = syntheticBzImage()
        old[0x206] = 0x0b // 2.11: no 64-bit entry
        #expect(throws: HypervisorError.self) { try BootLoader.load(.linux(kernel: old, initrd: nil), commandLine: "", vcpuCount: 1, into: memory) }
        #expect(throws: HypervisorError.self) {
            try BootLoader.load(.linux(kernel: syntheticBzImage(), initrd: nil), commandLine: String(repeating: "x", count: 3000), vcpuCount: 1, into: memory)
        }
        #expect(throws: HypervisorError.self) {
            try BootLoader.load(.linux(kernel: Array(repeating: 0, count: 4096), initrd: nil), commandLine: "", vcpuCount: 1, into: memory)
        }
        let tooSmall = try GuestMemory(size: 2 << 20)
        #expect(throws: HypervisorError.self) {
            try BootLoader.load(.linux(kernel: syntheticBzImage(initSize: 0x400_0000), initrd: nil), commandLine: "", vcpuCount: 1, into: tooSmall)
        }
    }

    @Test func loadsAnELFKernelByPVHNoteOrEntry() throws {
        let memory = try GuestMemory(size: 64 << 20)
        let code: [UInt8] = [0xf4, 0xeb, 0xfd]
        let pvh = try BootLoader.load(.linux(kernel: syntheticELF(code: code, bss: 4096, pvhEntry: 0x100_0001), initrd: [1, 2, 3]),
                                      commandLine: "console=ttyS0", vcpuCount: 1, into: memory)
        #expect(pvh.mode == .pvh)
        #expect(pvh.instructionPointer == 0x100_0001)
        #expect(pvh.rbx == 0x6000)
        #expect(try memory.read(at: 0x100_0000, length: 3) == code)
        #expect(try memory.load(UInt32.self, at: 0x6000) == 0x336e_c578)
        #expect(try memory.load(UInt32.self, at: 0x600c) == 1) // nr_modules
        #expect(try memory.load(UInt64.self, at: 0x6018) == 0x20000) // cmdline_paddr
        #expect(try memory.load(UInt64.self, at: 0x6020) == 0xe0000) // rsdp_paddr
        let modules = try memory.load(UInt64.self, at: 0x6010)
        let initrdAddress = try memory.load(UInt64.self, at: modules)
        #expect(try memory.read(at: initrdAddress, length: 3) == [1, 2, 3])
        #expect(try memory.load(UInt32.self, at: 0x6030) == 4) // memmap_entries: low RAM, EBDA, ACPI area, RAM from 1 MiB

        let plain = try BootLoader.load(.linux(kernel: syntheticELF(code: code, bss: 0, pvhEntry: nil), initrd: nil),
                                        commandLine: "", vcpuCount: 1, into: memory)
        #expect(plain.mode == .longMode)
        #expect(plain.instructionPointer == 0x100_0000)
        #expect(plain.rsi == GuestLayout.bootParamsAddress)
    }

    @Test func refusesMalformedELF() throws {
        let memory = try GuestMemory(size: 64 << 20)
        var truncated = syntheticELF(code: [0x90], bss: 0, pvhEntry: nil)
        truncated[96] = 0xff // p_filesz far beyond the file
        #expect(throws: HypervisorError.self) { try BootLoader.load(.linux(kernel: truncated, initrd: nil), commandLine: "", vcpuCount: 1, into: memory) }
        let low = syntheticELF(loadAddress: 0x1000, code: [0x90], bss: 0, pvhEntry: nil)
        #expect(throws: HypervisorError.self) { try BootLoader.load(.linux(kernel: low, initrd: nil), commandLine: "", vcpuCount: 1, into: memory) }
        let huge = syntheticELF(code: [0x90], bss: 1 << 30, pvhEntry: nil)
        #expect(throws: HypervisorError.self) { try BootLoader.load(.linux(kernel: huge, initrd: nil), commandLine: "", vcpuCount: 1, into: memory) }
    }

    @Test func flatImagesLoadAtOneMiB() throws {
        let memory = try GuestMemory(size: 4 << 20)
        let entry = try BootLoader.load(.flat([0xf4]), commandLine: "mode=hello", vcpuCount: 1, into: memory)
        #expect(entry.instructionPointer == 0x100000)
        #expect(entry.rdi == 0x20000)
        #expect(entry.rsi == 4 << 20)
        #expect(try memory.read(at: 0x100000, length: 1) == [0xf4])
        // Page tables identity-map 2 MiB pages: PML4[0] → PDPT, PD[1] maps 2 MiB.
        #expect(try memory.load(UInt64.self, at: 0x9000) == 0xa003)
        #expect(try memory.load(UInt64.self, at: 0xb008) == 0x20_0083)
    }
}

struct MPTableTests {
    @Test func checksumsAndEntriesMatchTheSpecification() {
        let table = MPTable(vcpuCount: 3).bytes
        #expect(Array(table[0..<4]) == Array("_MP_".utf8))
        #expect(table[0..<16].reduce(UInt8(0), &+) == 0)
        #expect(Array(table[16..<20]) == Array("PCMP".utf8))
        let length = Int(table[20]) | Int(table[21]) << 8
        #expect(length == table.count - 16)
        #expect(table[16...].reduce(UInt8(0), &+) == 0)
        let entryCount = Int(table[16 + 34]) | Int(table[16 + 35]) << 8
        #expect(entryCount == 3 + 1 + 1 + 24 + 2)
        // Processor entries: APIC IDs 0..2, only the first is the bootstrap processor.
        let first = 16 + 44
        #expect(table[first] == 0 && table[first + 1] == 0 && table[first + 3] == 3)
        #expect(table[first + 20 + 1] == 1 && table[first + 20 + 3] == 1)
    }
}

struct LongModeTests {
    @Test func descriptorsMatchTheFlatSegmentsLinuxExpects() {
        #expect(LongMode.gdt[1] == 0x00af_9b00_0000_ffff)
        #expect(LongMode.gdt[2] == 0x00cf_9300_0000_ffff)
        #expect(LongMode.gdt[3] == 0x008f_8b00_0000_ffff)
        #expect(LongMode.gdt[4] == 0x00cf_9b00_0000_ffff)
        let code = LongMode.segment(LongMode.codeSelector)
        #expect(code.l == 1 && code.db == 0 && code.type == 0xb && code.present == 1 && code.s == 1)
        let code32 = LongMode.segment(LongMode.code32Selector)
        #expect(code32.l == 0 && code32.db == 1)
    }
}

struct CPUIDPolicyTests {
    @Test func masksUnemulatableFeaturesAndSetsTopology() {
        let supported = [
            CPUIDEntry(function: 1, ebx: 0x0000_0800, ecx: 0xffff_ffff, edx: 0),
            CPUIDEntry(function: 7, index: 0, ebx: 0xffff_ffff, ecx: 0xffff_ffff),
            CPUIDEntry(function: 0xd, index: 0, eax: 7),
            CPUIDEntry(function: 0xb, index: 0),
            CPUIDEntry(function: 0x8000_0001, ecx: 0xffff_ffff),
        ]
        let entries = CPUIDPolicy(vcpuCount: 4).entries(from: supported, apicID: 2)
        let leaf1 = entries[0]
        #expect(leaf1.ecx & (1 << 26) == 0) // XSAVE
        #expect(leaf1.ecx & (1 << 13) == 0) // CMPXCHG16B
        #expect(leaf1.ecx & (1 << 23) == 0) // POPCNT
        #expect(leaf1.ecx & (1 << 31) != 0) // hypervisor
        #expect(leaf1.ebx >> 24 == 2)
        #expect((leaf1.ebx >> 16) & 0xff == 4)
        #expect(leaf1.ebx & 0xffff == 0x0800)
        #expect(entries[1].ebx & (1 << 20) == 0) // SMAP
        #expect(entries[1].ebx & (1 << 5) == 0) // AVX2
        #expect(!entries.contains { $0.function == 0xd })
        #expect(entries.first { $0.function == 0xb }?.edx == 2)
        #expect(entries.first { $0.function == 0x8000_0001 }!.ecx & (1 << 2) == 0) // SVM
    }
}

struct ACPITablesTests {
    func checksumIsZero(_ bytes: [UInt8]) -> Bool { bytes.reduce(UInt8(0), &+) == 0 }
    func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) } }
    func u64(_ bytes: [UInt8], _ offset: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) } }

    @Test func tablesChainFromTheRSDPWithValidChecksums() {
        let tables = ACPITables(vcpuCount: 2)
        #expect(Array(tables.rsdp[0..<8]) == Array("RSD PTR ".utf8))
        #expect(checksumIsZero(Array(tables.rsdp[0..<20])) && checksumIsZero(tables.rsdp))
        #expect(u64(tables.rsdp, 24) == ACPITables.xsdtAddress)
        for table in [tables.xsdt, tables.fadt, tables.madt, tables.dsdt] {
            #expect(checksumIsZero(table))
            #expect(Int(u32(table, 4)) == table.count)
        }
        #expect(u64(tables.xsdt, 36) == ACPITables.fadtAddress)
        #expect(u64(tables.xsdt, 44) == ACPITables.madtAddress)
        #expect(tables.fadt.count == 276)
        #expect(u64(tables.fadt, 140) == ACPITables.dsdtAddress)
        #expect(u32(tables.fadt, 112) & (1 << 20) != 0) // hardware-reduced
        #expect(tables.fadt[244] == 1 && u64(tables.fadt, 248) == 0x600) // sleep control in I/O space
        #expect(tables.fadt[116] == 1 && u64(tables.fadt, 120) == 0x64 && tables.fadt[128] == 0xfe) // reset via i8042
        // MADT: two enabled local APICs, then the IOAPIC with ID 2.
        #expect(Array(tables.madt[44..<52]) == [0, 8, 0, 0, 1, 0, 0, 0])
        #expect(Array(tables.madt[52..<60]) == [0, 8, 1, 1, 1, 0, 0, 0])
        #expect(tables.madt[60] == 1 && tables.madt[62] == 2 && u32(tables.madt, 64) == 0xfec0_0000)
        #expect(tables.dsdt[36...].starts(with: [0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05]))
    }

    @Test func sleepControlPowersOffOnlyForSoftOffWithEnable() {
        let requests = Locked(0)
        let device = SleepControl(requestPowerOff: { requests.withLock { $0 += 1 } })
        writeByte(device, 0, 5 << 2) // SLP_TYP without SLP_EN
        writeByte(device, 0, (3 << 2) | 0x20) // S3, not supported
        writeByte(device, 1, (5 << 2) | 0x20) // status register
        #expect(requests.withLock { $0 } == 0)
        writeByte(device, 0, (5 << 2) | 0x20)
        #expect(requests.withLock { $0 } == 1)
    }
}

struct AMLTests {
    @Test func packageLengthsUseTheShortestEncoding() {
        #expect(AML.packageLength(of: 10) == [11])
        #expect(AML.packageLength(of: 62) == [63])
        // 63 bytes of content + 2 length bytes = 65 = 0x41: low nibble 1 in byte 0, 0x4 in byte 1.
        #expect(AML.packageLength(of: 63) == [0x41, 0x04])
        // 5000 + 3 = 5003 = 0x138b needs two following bytes.
        #expect(AML.packageLength(of: 5000) == [0x8b, 0x38, 0x01])
    }

    @Test func serialPortAppearsInTheDSDTWithItsPortsAndInterrupt() {
        let dsdt = ACPITables(vcpuCount: 1).dsdt
        #expect(dsdt.reduce(UInt8(0), &+) == 0)
        #expect(dsdt.firstRange(of: Array("COM1".utf8)) != nil)
        #expect(dsdt.firstRange(of: Array("PNP0501\0".utf8)) != nil)
        // IO (Decode16, 0x3f8, 0x3f8, 1, 8), then Interrupt (edge, active-high) { 4 }.
        #expect(dsdt.firstRange(of: [0x47, 1, 0xf8, 0x03, 0xf8, 0x03, 1, 8, 0x89, 6, 0, 3, 1, 4, 0, 0, 0]) != nil)
    }

    @Test func virtioDevicesAppearInTheDSDTWithTheirWindowAndInterrupt() {
        let tables = ACPITables(vcpuCount: 1, virtioDevices: [ACPITables.MMIODevice(address: 0xd000_0000, length: 0x1000, gsi: 5)])
        let dsdt = tables.dsdt
        #expect(dsdt.reduce(UInt8(0), &+) == 0)
        #expect(dsdt.firstRange(of: Array("LNRO0005\0".utf8)) != nil)
        #expect(dsdt.firstRange(of: [0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0]) != nil)
        #expect(dsdt.firstRange(of: [0x89, 6, 0, 3, 1, 5, 0, 0, 0]) != nil)
        #expect(dsdt.firstRange(of: [0x10]) != nil && dsdt.firstRange(of: Array("\\_SB_".utf8)) != nil)
        #expect(dsdt.firstRange(of: [0x5b, 0x82]) != nil)
    }
}
