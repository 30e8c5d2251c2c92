/// The parts of an ELF64 x86-64 executable a kernel loader needs: loadable segments and, for PVH,
/// the Xen entry note. Every field is range-checked against the file (System V gABI, "ELF Header",
/// "Program Header"; Xen public/elfnote.h for the note).
struct ELFImage {
    struct Segment {
        let fileOffset: Int
        let fileSize: Int
        let physicalAddress: UInt64
        let memorySize: UInt64
    }

    static let magic: [UInt8] = [0x7f, 0x45, 0x4c, 0x46] // "\x7fELF"
    static let class64: UInt8 = 2
    static let littleEndian: UInt8 = 1
    static let machineX86_64: UInt16 = 62
    static let programHeaderLoad: UInt32 = 1
    static let programHeaderNote: UInt32 = 4
    /// XEN_ELFNOTE_PHYS32_ENTRY: 32-bit physical entry point for PVH (xen/include/public/elfnote.h).
    static let xenNotePhysicalEntry: UInt32 = 18
    static let maximumSegments = 64

    let entry: UInt64
    let segments: [Segment]
    /// The PVH 32-bit entry point, when the kernel has one.
    let pvhEntry: UInt32?

    static func isELF(_ data: [UInt8]) -> Bool { data.count >= 4 && Array(data[0..<4]) == magic }

    init(_ data: [UInt8]) throws {
        func read<T: FixedWidthInteger>(_: T.Type, _ offset: Int) throws -> T {
            guard offset >= 0, offset <= data.count - MemoryLayout<T>.size else {
                throw HypervisorError.invalidKernel("ELF field at \(offset) is beyond the file")
            }
            var value: T = 0
            for index in 0..<MemoryLayout<T>.size { value |= T(data[offset + index]) << (8 * index) }
            return value
        }
        guard Self.isELF(data), data.count >= 64, data[4] == Self.class64, data[5] == Self.littleEndian else {
            throw HypervisorError.invalidKernel("not a little-endian ELF64 file")
        }
        guard try read(UInt16.self, 18) == Self.machineX86_64 else { throw HypervisorError.invalidKernel("ELF machine is not x86-64") }
        entry = try read(UInt64.self, 24)
        let headerTable = try read(UInt64.self, 32)
        let headerSize = Int(try read(UInt16.self, 54))
        let headerCount = Int(try read(UInt16.self, 56))
        guard headerSize >= 56, headerCount <= Self.maximumSegments, headerTable < UInt64(data.count) else {
            throw HypervisorError.invalidKernel("ELF program header table is malformed")
        }
        var segments: [Segment] = []
        var pvhEntry: UInt32?
        for index in 0..<headerCount {
            let base = Int(headerTable) + index * headerSize
            let type = try read(UInt32.self, base)
            let offset = try read(UInt64.self, base + 8)
            let physical = try read(UInt64.self, base + 24)
            let fileSize = try read(UInt64.self, base + 32)
            let memorySize = try read(UInt64.self, base + 40)
            guard offset <= UInt64(data.count), fileSize <= UInt64(data.count) - offset, fileSize <= memorySize else {
                throw HypervisorError.invalidKernel("ELF segment \(index) lies outside the file")
            }
            if type == Self.programHeaderLoad {
                segments.append(Segment(fileOffset: Int(offset), fileSize: Int(fileSize), physicalAddress: physical, memorySize: memorySize))
            } else if type == Self.programHeaderNote {
                // Notes: namesz, descsz, type, then name and desc, each padded to 4 bytes.
                var cursor = Int(offset)
                let end = Int(offset + fileSize)
                while cursor + 12 <= end {
                    let nameSize = Int(try read(UInt32.self, cursor))
                    let descriptionSize = Int(try read(UInt32.self, cursor + 4))
                    let noteType = try read(UInt32.self, cursor + 8)
                    let nameStart = cursor + 12
                    let descriptionStart = nameStart + (nameSize + 3) & ~3
                    guard nameSize < 256, descriptionSize < 4096, descriptionStart + descriptionSize <= end else { break }
                    let name = data[nameStart..<(nameStart + max(nameSize - 1, 0))]
                    if noteType == Self.xenNotePhysicalEntry, Array(name) == Array("Xen".utf8), descriptionSize >= 4 {
                        pvhEntry = try read(UInt32.self, descriptionStart)
                    }
                    cursor = descriptionStart + (descriptionSize + 3) & ~3
                }
            }
        }
        guard !segments.isEmpty else { throw HypervisorError.invalidKernel("ELF has no loadable segments") }
        self.segments = segments
        self.pvhEntry = pvhEntry
    }
}
