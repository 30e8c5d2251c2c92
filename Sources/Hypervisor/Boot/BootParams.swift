/// The Linux "zero page" (struct boot_params), built as bytes so its layout can be tested without a
/// VM. Offsets: Documentation/arch/x86/zero-page.rst and boot.rst ("The Real-Mode Kernel Header").
public struct BootParams: Sendable {
    public static let size = 4096

    // zero-page.rst offsets.
    static let extRamdiskImageOffset = 0x0c0
    static let extRamdiskSizeOffset = 0x0c4
    static let extCommandLinePointerOffset = 0x0c8
    static let e820EntryCountOffset = 0x1e8
    static let e820TableOffset = 0x2d0
    static let e820EntrySize = 20
    static let e820MaximumEntries = 128
    // Setup header offsets (boot.rst).
    static let setupHeaderOffset = 0x1f1
    static let setupSectorsOffset = 0x1f1
    static let videoModeOffset = 0x1fa
    static let bootFlagOffset = 0x1fe
    static let jumpOffset = 0x200
    static let headerMagicOffset = 0x202
    static let protocolVersionOffset = 0x206
    static let loaderTypeOffset = 0x210
    static let loadFlagsOffset = 0x211
    static let ramdiskImageOffset = 0x218
    static let ramdiskSizeOffset = 0x21c
    static let heapEndPointerOffset = 0x224
    static let commandLinePointerOffset = 0x228
    static let initrdAddressMaximumOffset = 0x22c
    static let kernelAlignmentOffset = 0x230
    static let xLoadFlagsOffset = 0x236
    static let commandLineSizeOffset = 0x238
    static let initSizeOffset = 0x260

    static let bootFlag: UInt16 = 0xaa55
    /// "HdrS", little-endian.
    static let headerMagic: UInt32 = 0x5372_6448
    /// type_of_loader 0xff: "undefined" boot loader (boot.rst, type_of_loader).
    static let undefinedLoader: UInt8 = 0xff
    /// loadflags bit 0 LOADED_HIGH (kernel at 1 MiB), bit 7 CAN_USE_HEAP.
    static let loadedHigh: UInt8 = 0x01
    static let canUseHeap: UInt8 = 0x80
    /// vid_mode 0xffff: "normal" text mode, no prompt.
    static let normalVideoMode: UInt16 = 0xffff
    /// kernel_alignment Linux uses for x86_64 (CONFIG_PHYSICAL_ALIGN default, 16 MiB).
    static let defaultKernelAlignment: UInt32 = 0x100_0000

    public private(set) var bytes: [UInt8]

    /// A zero page holding a copy of the kernel's own setup header (bzImage), or a minimal synthesised
    /// header when there is none (ELF vmlinux).
    public init(setupHeader: [UInt8]? = nil) {
        bytes = [UInt8](repeating: 0, count: Self.size)
        if let setupHeader {
            let length = min(setupHeader.count, Self.size - Self.setupHeaderOffset)
            bytes.replaceSubrange(Self.setupHeaderOffset..<(Self.setupHeaderOffset + length), with: setupHeader.prefix(length))
        } else {
            set(Self.bootFlag, at: Self.bootFlagOffset)
            set(Self.headerMagic, at: Self.headerMagicOffset)
            set(Self.defaultKernelAlignment, at: Self.kernelAlignmentOffset)
        }
        set(Self.undefinedLoader, at: Self.loaderTypeOffset)
        set(Self.normalVideoMode, at: Self.videoModeOffset)
        set(bytes[Self.loadFlagsOffset] | Self.loadedHigh | Self.canUseHeap, at: Self.loadFlagsOffset)
        // heap_end_ptr: end of the real-mode heap, relative to the setup start (boot.rst recommends 0xde00).
        set(UInt16(0xde00), at: Self.heapEndPointerOffset)
    }

    /// Wraps an existing zero page (e.g. read back from guest memory).
    public init(copying bytes: [UInt8]) {
        self.bytes = Array(bytes.prefix(Self.size)) + [UInt8](repeating: 0, count: max(0, Self.size - bytes.count))
    }

    mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { source in
            bytes.replaceSubrange(offset..<(offset + source.count), with: source)
        }
    }

    func get<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { destination in
            for index in 0..<destination.count { destination[index] = bytes[offset + index] }
        }
        return T(littleEndian: value)
    }

    public mutating func setCommandLine(address: UInt64, size: Int) {
        set(UInt32(truncatingIfNeeded: address), at: Self.commandLinePointerOffset)
        set(UInt32(truncatingIfNeeded: address >> 32), at: Self.extCommandLinePointerOffset)
        set(UInt32(size), at: Self.commandLineSizeOffset)
    }

    public mutating func setRamdisk(address: UInt64, size: UInt64) {
        set(UInt32(truncatingIfNeeded: address), at: Self.ramdiskImageOffset)
        set(UInt32(truncatingIfNeeded: size), at: Self.ramdiskSizeOffset)
        set(UInt32(truncatingIfNeeded: address >> 32), at: Self.extRamdiskImageOffset)
        set(UInt32(truncatingIfNeeded: size >> 32), at: Self.extRamdiskSizeOffset)
    }

    /// Stores the memory map; at most 128 entries fit in the zero page.
    public mutating func setMemoryMap(_ entries: [E820Entry]) throws {
        guard entries.count <= Self.e820MaximumEntries else {
            throw HypervisorError.invalidConfiguration("\(entries.count) e820 entries exceed the zero page's \(Self.e820MaximumEntries)")
        }
        set(UInt8(entries.count), at: Self.e820EntryCountOffset)
        for (index, entry) in entries.enumerated() {
            let offset = Self.e820TableOffset + index * Self.e820EntrySize
            set(entry.address, at: offset)
            set(entry.size, at: offset + 8)
            set(entry.kind.rawValue, at: offset + 16)
        }
    }

    public var commandLinePointer: UInt32 { self.get(UInt32.self, at: Self.commandLinePointerOffset) }
    public var ramdiskImage: UInt32 { self.get(UInt32.self, at: Self.ramdiskImageOffset) }
    public var ramdiskSize: UInt32 { self.get(UInt32.self, at: Self.ramdiskSizeOffset) }
    public var e820EntryCount: Int { Int(bytes[Self.e820EntryCountOffset]) }
    public var loaderType: UInt8 { bytes[Self.loaderTypeOffset] }
    public var bootFlagValue: UInt16 { self.get(UInt16.self, at: Self.bootFlagOffset) }
    public var headerMagicValue: UInt32 { self.get(UInt32.self, at: Self.headerMagicOffset) }

    public func e820Entry(_ index: Int) -> E820Entry? {
        let offset = Self.e820TableOffset + index * Self.e820EntrySize
        guard index < e820EntryCount, let kind = E820Entry.Kind(rawValue: get(UInt32.self, at: offset + 16)) else { return nil }
        return E820Entry(address: get(UInt64.self, at: offset), size: get(UInt64.self, at: offset + 8), kind: kind)
    }
}
