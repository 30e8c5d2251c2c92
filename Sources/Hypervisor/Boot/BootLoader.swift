import CKVM

/// What to boot.
public enum BootImage: Sendable {
    /// A Linux kernel: bzImage, or ELF vmlinux (PVH entry when it has the Xen PVH note, otherwise the
    /// 64-bit boot protocol at its ELF entry).
    case linux(kernel: [UInt8], initrd: [UInt8]?)
    /// A freestanding ring-0 test guest: raw bytes loaded at 1 MiB and entered in 64-bit mode with
    /// RDI = command line address and RSI = RAM size.
    case flat([UInt8])
}

/// How the boot vCPU enters the guest.
public struct BootEntry: Sendable {
    public enum Mode: Sendable, Equatable {
        /// 64-bit mode, identity-mapped, RSI = zero page (Linux) or RDI = command line (flat).
        case longMode
        /// 32-bit protected mode without paging, EBX = hvm_start_info (PVH).
        case pvh
    }

    public var mode: Mode
    public var instructionPointer: UInt64
    public var rsi: UInt64 = 0
    public var rdi: UInt64 = 0
    public var rbx: UInt64 = 0
}

/// Writes a kernel and its boot structures into guest memory and says how to enter it.
public enum BootLoader {
    // Setup-header checks (boot.rst).
    static let minimumProtocolVersion: UInt16 = 0x020c // 2.12: xloadflags, 64-bit entry
    static let xLoadFlagKernel64: UInt16 = 1 << 0
    static let sectorSize = 512
    /// A setup_sects of 0 means 4 (boot.rst, "setup_sects").
    static let defaultSetupSectors = 4
    /// The 64-bit entry is 0x200 bytes after the protected-mode kernel's start (boot.rst §64-bit Boot Protocol).
    static let bzImage64BitEntryOffset: UInt64 = 0x200
    static let pageSize: UInt64 = 4096

    public static func load(_ image: BootImage, commandLine: String, vcpuCount: Int, virtioDevices: [ACPITables.MMIODevice] = [],
                            cmosClock: Bool = false, into memory: GuestMemory) throws -> BootEntry {
        try LongMode.writeTables(into: memory)
        try memory.write(MPTable(vcpuCount: vcpuCount).bytes, at: GuestLayout.ebdaStart)
        for table in ACPITables(vcpuCount: vcpuCount, virtioDevices: virtioDevices, cmosClock: cmosClock).placements {
            try memory.write(table.bytes, at: table.address)
        }
        let commandBytes = Array(commandLine.utf8)
        guard commandBytes.count < GuestLayout.commandLineCapacity, !commandBytes.contains(0) else {
            throw HypervisorError.invalidConfiguration("kernel command line is longer than \(GuestLayout.commandLineCapacity - 1) bytes or contains NUL")
        }
        try memory.write(commandBytes + [0], at: GuestLayout.commandLineAddress)

        switch image {
        case let .flat(bytes):
            try checkFits(bytes.count, at: GuestLayout.kernelLoadAddress, memory: memory, what: "flat guest image")
            try memory.write(bytes, at: GuestLayout.kernelLoadAddress)
            return BootEntry(mode: .longMode, instructionPointer: GuestLayout.kernelLoadAddress,
                             rsi: UInt64(memory.size), rdi: GuestLayout.commandLineAddress)
        case let .linux(kernel, initrd):
            if ELFImage.isELF(kernel) {
                return try loadELF(kernel, initrd: initrd, commandLength: commandBytes.count, memory: memory)
            }
            return try loadBzImage(kernel, initrd: initrd, commandLength: commandBytes.count, memory: memory)
        }
    }

    static func checkFits(_ length: Int, at address: UInt64, memory: GuestMemory, what: String) throws {
        guard memory.hostBuffer(at: address, length: length) != nil else {
            throw HypervisorError.invalidConfiguration("\(what) (\(length) bytes at 0x\(String(address, radix: 16))) does not fit in guest RAM (\(memory.size >> 20) MiB)")
        }
    }

    /// Places the initrd as high as possible below `limit` and above `floor`; returns its address.
    static func placeInitrd(_ initrd: [UInt8], floor: UInt64, limit: UInt64, memory: GuestMemory) throws -> UInt64 {
        let lowRAMEnd = memory.regions[0].guestEnd
        let top = min(lowRAMEnd, limit)
        guard UInt64(initrd.count) <= top, (top - UInt64(initrd.count)) & ~(pageSize - 1) >= floor else {
            throw HypervisorError.invalidConfiguration("initrd of \(initrd.count) bytes does not fit in guest RAM below 0x\(String(top, radix: 16)) above the kernel")
        }
        let address = (top - UInt64(initrd.count)) & ~(pageSize - 1)
        try memory.write(initrd, at: address)
        return address
    }

    static func writeBootParams(_ params: inout BootParams, initrd: [UInt8]?, kernelEnd: UInt64, initrdLimit: UInt64,
                                commandLength: Int, memory: GuestMemory) throws {
        params.setCommandLine(address: GuestLayout.commandLineAddress, size: commandLength)
        if let initrd, !initrd.isEmpty {
            let address = try placeInitrd(initrd, floor: kernelEnd, limit: initrdLimit, memory: memory)
            params.setRamdisk(address: address, size: UInt64(initrd.count))
        }
        try params.setMemoryMap(E820Entry.map(for: memory.regions))
        try memory.write(params.bytes, at: GuestLayout.bootParamsAddress)
    }

    static func loadBzImage(_ kernel: [UInt8], initrd: [UInt8]?, commandLength: Int, memory: GuestMemory) throws -> BootEntry {
        guard kernel.count > 0x264 else { throw HypervisorError.invalidKernel("file is too small to be a bzImage or ELF kernel") }
        var probe = BootParams(setupHeader: Array(kernel[BootParams.setupHeaderOffset..<0x264]))
        guard probe.bootFlagValue == BootParams.bootFlag, probe.headerMagicValue == BootParams.headerMagic else {
            throw HypervisorError.invalidKernel("neither ELF nor bzImage (no 0xAA55 boot flag / HdrS magic)")
        }
        let version = probe.get(UInt16.self, at: BootParams.protocolVersionOffset)
        let xLoadFlags = probe.get(UInt16.self, at: BootParams.xLoadFlagsOffset)
        guard version >= minimumProtocolVersion, xLoadFlags & xLoadFlagKernel64 != 0 else {
            throw HypervisorError.invalidKernel("bzImage boot protocol 0x\(String(version, radix: 16)) has no 64-bit entry (need ≥ 2.12 with XLF_KERNEL_64)")
        }
        let maximumCommandLine = Int(probe.get(UInt32.self, at: BootParams.commandLineSizeOffset))
        guard commandLength <= maximumCommandLine else {
            throw HypervisorError.invalidConfiguration("command line of \(commandLength) bytes exceeds the kernel's cmdline_size \(maximumCommandLine)")
        }
        var setupSectors = Int(kernel[BootParams.setupSectorsOffset])
        if setupSectors == 0 { setupSectors = defaultSetupSectors }
        let kernelOffset = (setupSectors + 1) * sectorSize
        guard kernelOffset < kernel.count else { throw HypervisorError.invalidKernel("setup_sects points past the end of the bzImage") }
        // The setup header runs from 0x1f1 to 0x202 + the byte at 0x201 (boot.rst, "Details of Header Fields").
        let headerEnd = min(0x202 + Int(kernel[0x201]), kernel.count, BootParams.size)
        var params = BootParams(setupHeader: Array(kernel[BootParams.setupHeaderOffset..<headerEnd]))
        probe = params

        let payload = kernel[kernelOffset...]
        let initSize = UInt64(probe.get(UInt32.self, at: BootParams.initSizeOffset))
        try checkFits(max(payload.count, Int(initSize)), at: GuestLayout.kernelLoadAddress, memory: memory, what: "kernel (init_size)")
        try memory.write(payload, at: GuestLayout.kernelLoadAddress)
        let kernelEnd = GuestLayout.kernelLoadAddress + max(UInt64(payload.count), initSize)
        let initrdLimit = UInt64(probe.get(UInt32.self, at: BootParams.initrdAddressMaximumOffset)) + 1
        try writeBootParams(&params, initrd: initrd, kernelEnd: kernelEnd, initrdLimit: initrdLimit, commandLength: commandLength, memory: memory)
        return BootEntry(mode: .longMode, instructionPointer: GuestLayout.kernelLoadAddress + bzImage64BitEntryOffset,
                         rsi: GuestLayout.bootParamsAddress)
    }

    static func loadELF(_ kernel: [UInt8], initrd: [UInt8]?, commandLength: Int, memory: GuestMemory) throws -> BootEntry {
        let elf = try ELFImage(kernel)
        var kernelEnd: UInt64 = 0
        for segment in elf.segments {
            guard segment.physicalAddress >= GuestLayout.kernelLoadAddress, segment.memorySize < UInt64(Int.max) else {
                throw HypervisorError.invalidKernel("ELF segment at 0x\(String(segment.physicalAddress, radix: 16)) is below 1 MiB")
            }
            try checkFits(Int(segment.memorySize), at: segment.physicalAddress, memory: memory, what: "ELF segment")
            try memory.write(kernel[segment.fileOffset..<(segment.fileOffset + segment.fileSize)], at: segment.physicalAddress)
            let bss = try memory.checkedBuffer(at: segment.physicalAddress + UInt64(segment.fileSize), length: Int(segment.memorySize) - segment.fileSize)
            bss.initializeMemory(as: UInt8.self, repeating: 0)
            kernelEnd = max(kernelEnd, segment.physicalAddress + segment.memorySize)
        }
        // initrd_addr_max for kernels without a setup header: the 2 GiB limit of boot protocol < 2.03 is
        // too strict for 64-bit kernels; stay below the 32-bit MMIO hole.
        let initrdLimit = GuestMemory.mmioHoleStart
        if let pvhEntry = elf.pvhEntry {
            var ramdisk: (UInt64, UInt64)?
            if let initrd, !initrd.isEmpty {
                ramdisk = (try placeInitrd(initrd, floor: kernelEnd, limit: initrdLimit, memory: memory), UInt64(initrd.count))
            }
            let info = PVHStartInfo(commandLineAddress: GuestLayout.commandLineAddress, memoryMapAddress: GuestLayout.pvhMemoryMapAddress,
                                    memoryMap: E820Entry.map(for: memory.regions), moduleListAddress: GuestLayout.pvhModuleListAddress,
                                    ramdisk: ramdisk)
            try memory.write(info.startInfoBytes, at: GuestLayout.pvhStartInfoAddress)
            try memory.write(info.memoryMapBytes, at: GuestLayout.pvhMemoryMapAddress)
            try memory.write(info.moduleListBytes, at: GuestLayout.pvhModuleListAddress)
            return BootEntry(mode: .pvh, instructionPointer: UInt64(pvhEntry), rbx: GuestLayout.pvhStartInfoAddress)
        }
        var params = BootParams()
        try writeBootParams(&params, initrd: initrd, kernelEnd: kernelEnd, initrdLimit: initrdLimit, commandLength: commandLength, memory: memory)
        return BootEntry(mode: .longMode, instructionPointer: elf.entry, rsi: GuestLayout.bootParamsAddress)
    }
}
