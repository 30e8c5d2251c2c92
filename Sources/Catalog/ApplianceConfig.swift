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
    /// How the kernel artifact is entered: "linux" (bzImage or ELF vmlinux) or "flat" (a raw ring-0 test guest).
    public var kernelFormat: String?

    public static let defaultReadyMarker = "STREAMVM-READY"
    /// Limits that keep a hostile appliance.json from asking for absurd resources.
    public static let maximumMemoryMiB = 1 << 20
    public static let maximumVCPUs = 256

    public init(name: String, version: String, description: String? = nil, memoryMiB: Int, vcpus: Int,
                kernelCommandLine: String? = nil, readyMarker: String = ApplianceConfig.defaultReadyMarker,
                kernelFormat: String? = nil) {
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
        if let kernelFormat, !["linux", "flat"].contains(kernelFormat) {
            throw CatalogError.malformed(file: file, problem: "kernelFormat '\(kernelFormat)' is not 'linux' or 'flat'")
        }
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
