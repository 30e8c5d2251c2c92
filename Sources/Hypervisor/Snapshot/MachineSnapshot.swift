import Foundation

/// The contents of vmstate.json: everything needed to resume a paused machine except guest RAM,
/// which lives in memory.img (described by `memory`). Versioned: a file with another `format` or a
/// newer `version` is refused with a message, never half-read.
public struct MachineSnapshot: Codable, Sendable, Equatable {
    public static let formatName = "streamvm-vmstate"
    /// Bump when the meaning of any field changes; `load` refuses versions it does not know.
    public static let currentVersion = 1
    /// Artifact names, as the catalogue's `memory` and `state` roles (docs/FORMAT.md).
    public static let memoryFileName = "memory.img"
    public static let stateFileName = "vmstate.json"

    /// Device state: the console UART and each virtio-mmio transport in bus order.
    public struct Devices: Codable, Sendable, Equatable {
        public var serial: Serial8250.State
        public var virtio: [VirtioMMIOTransport.State]
    }

    /// How memory.img is laid out and how to check it.
    public struct MemoryImage: Codable, Sendable, Equatable {
        /// Bytes: the whole of guest RAM, in `GuestMemory` backing-file order (RAM below the MMIO hole,
        /// then RAM from 4 GiB). Zero pages are holes in the file.
        public var size: Int
        public var pageSize: Int
        /// Pages that are not all zeros.
        public var dataPages: Int
        /// `PageDigest` of every page, little-endian UInt64s; 0 marks a zero page.
        public var pageDigests: Data

        public var pageCount: Int { size / pageSize }

        public func digest(ofPage page: Int) -> UInt64 {
            pageDigests.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: page * 8, as: UInt64.self)) }
        }
    }

    public var format: String
    public var version: Int
    /// Guest RAM in bytes and vCPU count: a restore must use the same.
    public var memorySize: Int
    public var vcpuCount: Int
    public var vcpus: [VCPUState]
    public var platform: PlatformState
    public var devices: Devices
    public var memory: MemoryImage

    /// Checks internal consistency (sizes, counts, struct sizes); a failure names the field.
    public func validate() throws {
        guard format == Self.formatName else { throw HypervisorError.invalidSnapshot("format is \"\(format)\", expected \"\(Self.formatName)\"") }
        guard version == Self.currentVersion else {
            throw HypervisorError.invalidSnapshot("format version \(version); this streamvm reads version \(Self.currentVersion) (re-create the snapshot with this version)")
        }
        guard vcpuCount >= 1, vcpus.count == vcpuCount else { throw HypervisorError.invalidSnapshot("vcpuCount \(vcpuCount) but \(vcpus.count) vCPU states") }
        guard memory.pageSize == GuestMemory.pageSize else {
            throw HypervisorError.invalidSnapshot("memory pages of \(memory.pageSize) bytes, this host uses \(GuestMemory.pageSize)")
        }
        guard memorySize > 0, memory.size == memorySize, memorySize % memory.pageSize == 0 else {
            throw HypervisorError.invalidSnapshot("memory image size \(memory.size) does not match guest RAM \(memorySize)")
        }
        guard memory.pageDigests.count == memory.pageCount * 8 else {
            throw HypervisorError.invalidSnapshot("page digest table has \(memory.pageDigests.count) bytes, expected \(memory.pageCount * 8)")
        }
        let dataPages = (0..<memory.pageCount).reduce(0) { $0 + (memory.digest(ofPage: $1) == 0 ? 0 : 1) }
        guard dataPages == memory.dataPages else {
            throw HypervisorError.invalidSnapshot("page digest table lists \(dataPages) data pages, header says \(memory.dataPages)")
        }
        for (index, vcpu) in vcpus.enumerated() { try vcpu.validate(vcpu: index) }
        try platform.validate()
    }

    /// Encodes as vmstate.json (sorted keys, so the same state gives the same bytes and chunks).
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }

    /// Decodes and validates vmstate.json bytes.
    public static func decode(_ data: Data) throws -> MachineSnapshot {
        let snapshot: MachineSnapshot
        do {
            snapshot = try JSONDecoder().decode(MachineSnapshot.self, from: data)
        } catch {
            throw HypervisorError.invalidSnapshot("\(stateFileName) is damaged or not a StreamVM snapshot (\(data.count) bytes): \(error)")
        }
        try snapshot.validate()
        return snapshot
    }
}
