import Foundation

/// `appliance.json`: what an appliance is called and how to start it. Published inside its manifest,
/// so a client learns the boot settings from the same signed chain as the bytes.
public struct ApplianceConfig: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    public var description: String?
    /// Guest RAM in MiB.
    public var memoryMiB: Int
    public var vcpus: Int
    /// Linux kernel command line; nil for non-Linux guests.
    public var kernelCommandLine: String?
    /// The console line that says the appliance is ready for use.
    public var readyMarker: String
    /// How the kernel artifact is entered; absent means `.linux`.
    public var kernelFormat: KernelFormat?
    /// Network interfaces (virtio-net devices), in order; absent or empty means no network.
    public var interfaces: [NetworkInterfaceConfig]?

    public static let defaultReadyMarker = "STREAMVM-READY"
    /// Limits that keep a hostile appliance.json from asking for absurd resources.
    public static let maximumMemoryMiB = 1 << 20
    public static let maximumVCPUs = 256

    public init(name: String, version: String, description: String? = nil, memoryMiB: Int, vcpus: Int,
                kernelCommandLine: String? = nil, readyMarker: String = ApplianceConfig.defaultReadyMarker,
                kernelFormat: KernelFormat? = nil) {
        self.name = name
        self.version = version
        self.description = description
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.kernelCommandLine = kernelCommandLine
        self.readyMarker = readyMarker
        self.kernelFormat = kernelFormat
    }

    /// Checks everything a catalogue path or a VMM would trust; `file` names the source in errors.
    public func validate(file: String) throws {
        try Self.validateName(name, what: "name", file: file)
        try Self.validateName(version, what: "version", file: file)
        guard (1...Self.maximumMemoryMiB).contains(memoryMiB) else {
            throw CatalogError.malformed(file: file, problem: "memoryMiB \(memoryMiB) is outside 1...\(Self.maximumMemoryMiB)")
        }
        guard (1...Self.maximumVCPUs).contains(vcpus) else {
            throw CatalogError.malformed(file: file, problem: "vcpus \(vcpus) is outside 1...\(Self.maximumVCPUs)")
        }
        guard !readyMarker.isEmpty, readyMarker.utf8.count <= 256 else {
            throw CatalogError.malformed(file: file, problem: "readyMarker must be 1 to 256 bytes")
        }
        let interfaces = interfaces ?? []
        guard interfaces.count <= NetworkInterfaceConfig.maximumCount else {
            throw CatalogError.malformed(file: file, problem: "interfaces has \(interfaces.count) entries, at most \(NetworkInterfaceConfig.maximumCount) are allowed")
        }
        var seen = Set<[UInt8]>()
        for (index, interface) in interfaces.enumerated() {
            try interface.validate(file: file, index: index)
            guard seen.insert(try interface.macBytes(file: file, field: "interfaces[\(index)].mac")).inserted else {
                throw CatalogError.malformed(file: file, problem: "interfaces[\(index)].mac \(interface.mac) is used by an earlier interface")
            }
        }
    }

    /// The file name inside an appliance directory.
    public static let fileName = "appliance.json"
    /// appliance.json is a few hundred bytes; anything over this is not one.
    public static let maximumFileBytes = 1 << 20

    /// Reads and validates `<directory>/appliance.json`. Every failure is one sentence naming the file
    /// and the problem ("…/appliance.json: missing field readyMarker"), never a Foundation dump.
    public static func load(directory: String) throws -> ApplianceConfig {
        let path = (directory.hasSuffix("/") ? String(directory.dropLast()) : directory) + "/" + fileName
        var info = stat()
        guard stat(directory, &info) == 0 else {
            throw CatalogError.io(path: directory, errno: errno)
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw CatalogError.io(path: directory, errno: ENOTDIR) }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CatalogError.io(path: path, errno: errno) }
        defer { try? handle.close() }
        let data = try handle.read(upToCount: maximumFileBytes + 1) ?? Data()
        guard data.count <= maximumFileBytes else { throw CatalogError.tooLarge(file: path, size: data.count, limit: maximumFileBytes) }
        return try decode(data, file: path)
    }

    /// Decodes and validates appliance.json bytes; `file` names the source in errors.
    public static func decode(_ data: Data, file: String) throws -> ApplianceConfig {
        let config: ApplianceConfig
        do {
            config = try JSONDecoder().decode(ApplianceConfig.self, from: data)
        } catch {
            throw CatalogError.malformed(file: file, problem: DecodingProblem.describe(error))
        }
        try config.validate(file: file)
        return config
    }

    /// Names and versions appear in URLs and file names: letters, digits, '.', '_', '-', 1 to 64 of them,
    /// not starting with '.'.
    public static func validateName(_ value: String, what: String, file: String) throws {
        let allowed = value.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
                || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
        }
        guard allowed, (1...64).contains(value.utf8.count), !value.hasPrefix(".") else {
            throw CatalogError.malformed(file: file, problem: "\(what) '\(value.prefix(80))' must be 1-64 of [A-Za-z0-9._-], not starting with '.'")
        }
    }
}

/// How a kernel artifact is entered.
public enum KernelFormat: String, Codable, Sendable, CaseIterable {
    /// A Linux bzImage or ELF vmlinux (PVH or 64-bit entry).
    case linux
    /// A raw ring-0 image loaded at 1 MiB (the test guest).
    case flat

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let format = KernelFormat(rawValue: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "'\(text.prefix(40))' is not one of \(KernelFormat.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        self = format
    }
}
