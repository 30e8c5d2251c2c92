import Foundation

/// The contents of vmstate.json: everything needed to resume a paused machine except guest RAM,
/// which lives in memory.img (described by `memory`). Versioned: a file with another `format` or a
/// newer `version` is refused with a message, never half-read.
public struct MachineSnapshot: Codable, Sendable, Equatable {
    public static let formatName = "streamvm-vmstate"
    /// Bump when the meaning of any field changes; `load` refuses versions it does not know.
    /// Version 2: device state is a list of per-device records keyed by device id (was: a serial
    /// UART and a virtio array), and `disks` records each disk backend. Version 1 files are still
    /// read (`LegacyDevicesV1`).
    public static let currentVersion = 2
    /// Versions this build reads.
    public static let readableVersions = 1...currentVersion
    /// Artifact names, as the catalogue's `memory` and `state` roles (docs/FORMAT.md).
    public static let memoryFileName = "memory.img"
    public static let stateFileName = "vmstate.json"

    /// Version 1's device state: the console UART and each virtio-mmio transport in bus order
    /// (disk order). Read only, and turned into records on decoding.
    struct LegacyDevicesV1: Codable {
        var serial: Serial8250.State
        var virtio: [VirtioMMIOTransport.State]

        func records() throws -> [DeviceStateRecord] {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            func text(_ value: some Encodable) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
            var records = [DeviceStateRecord(id: Machine.serialDeviceID, kind: "serial8250", state: try text(serial))]
            for (index, transport) in virtio.enumerated() {
                records.append(DeviceStateRecord(id: Machine.diskDeviceID(index), kind: "virtio-mmio/\(VirtioBlock.blockDeviceType)", state: try text(transport)))
            }
            return records
        }
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
    /// Every persistent device's state, keyed by device id (`DeviceManager`).
    public var devices: [DeviceStateRecord]
    /// What each virtio-blk disk was backed by when the snapshot was taken, in disk order (empty in
    /// version 1 files). The disk's contents are not in the snapshot: they stay in the backend's
    /// files (flushed before saving), which belong with the snapshot.
    public var disks: [DiskReference]
    public var memory: MemoryImage

    public init(format: String, version: Int, memorySize: Int, vcpuCount: Int, vcpus: [VCPUState], platform: PlatformState,
                devices: [DeviceStateRecord], disks: [DiskReference] = [], memory: MemoryImage) {
        self.format = format
        self.version = version
        self.memorySize = memorySize
        self.vcpuCount = vcpuCount
        self.vcpus = vcpus
        self.platform = platform
        self.devices = devices
        self.disks = disks
        self.memory = memory
    }

    enum CodingKeys: String, CodingKey {
        case format, version, memorySize, vcpuCount, vcpus, platform, devices, disks, memory
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        format = try container.decode(String.self, forKey: .format)
        version = try container.decode(Int.self, forKey: .version)
        memorySize = try container.decode(Int.self, forKey: .memorySize)
        vcpuCount = try container.decode(Int.self, forKey: .vcpuCount)
        vcpus = try container.decode([VCPUState].self, forKey: .vcpus)
        platform = try container.decode(PlatformState.self, forKey: .platform)
        memory = try container.decode(MemoryImage.self, forKey: .memory)
        if !Self.readableVersions.contains(version) {
            devices = [] // `validate` refuses the version with its own message
            disks = []
        } else if version == 1 {
            devices = try container.decode(LegacyDevicesV1.self, forKey: .devices).records()
            disks = []
        } else {
            devices = try container.decode([DeviceStateRecord].self, forKey: .devices)
            disks = try container.decode([DiskReference].self, forKey: .disks)
        }
    }

    /// Checks the machine's disks against the ones recorded: same count (when recorded) and size.
    /// The paths may differ (a snapshot copied with its appliance directory), the sizes may not.
    func checkDisks(against backends: [any BlockBackend]) throws {
        guard !disks.isEmpty else { return }
        guard disks.count == backends.count else {
            throw HypervisorError.invalidSnapshot("the snapshot was taken with \(disks.count) disks, this machine has \(backends.count)")
        }
        for (index, (saved, backend)) in zip(disks, backends).enumerated() where saved.size != backend.size {
            throw HypervisorError.invalidSnapshot("disk \(index) (\(saved.device)) was \(saved.size) bytes when the snapshot was taken, it is \(backend.size) bytes now")
        }
    }

    /// Checks internal consistency (sizes, counts, struct sizes); a failure names the field.
    public func validate() throws {
        guard format == Self.formatName else { throw HypervisorError.invalidSnapshot("format is \"\(format)\", expected \"\(Self.formatName)\"") }
        guard Self.readableVersions.contains(version) else {
            throw HypervisorError.invalidSnapshot("format version \(version); this streamvm reads versions \(Self.readableVersions.lowerBound)-\(Self.readableVersions.upperBound) (re-create the snapshot with this version)")
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
