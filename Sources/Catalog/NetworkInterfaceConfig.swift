/// One network interface in appliance.json (issue #17): the guest's MAC, where its frames go
/// (`switch:<name>`, a port of the host switch `<name>`; `tap:<netns>/<ifname>`, a tap device in a
/// network namespace the user made), and the IPv4 address a Linux appliance gets on its kernel
/// command line (`ip=`). Checked here as text: the VMM builds the device, the `Network` module the
/// backend.
public struct NetworkInterfaceConfig: Codable, Sendable, Equatable {
    public var mac: String
    public var backend: String
    /// `a.b.c.d/prefix`; nil leaves the guest to configure itself.
    public var address: String?

    public init(mac: String, backend: String, address: String? = nil) {
        self.mac = mac
        self.backend = backend
        self.address = address
    }

    /// Where the interface's frames go, parsed from `backend`.
    public enum Backend: Sendable, Equatable {
        case switchPort(switchName: String)
        case tap(namespace: String, interface: String)
    }

    /// At most this many interfaces per appliance (each is a virtio-mmio device and an interrupt line).
    public static let maximumCount = 8

    /// `backend` parsed; throws naming `field` (e.g. `interfaces[0].backend`) when malformed.
    public func parsedBackend(file: String, field: String) throws -> Backend {
        if backend.hasPrefix("switch:") {
            let name = String(backend.dropFirst("switch:".count))
            try ApplianceConfig.validateName(name, what: "\(field) switch name", file: file)
            return .switchPort(switchName: name)
        }
        if backend.hasPrefix("tap:") {
            let parts = backend.dropFirst("tap:".count).split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw CatalogError.malformed(file: file, problem: "\(field) '\(backend.prefix(80))' must be tap:<netns>/<ifname>")
            }
            try ApplianceConfig.validateName(String(parts[0]), what: "\(field) network namespace", file: file)
            // Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
            guard parts[1].utf8.count <= 15 else {
                throw CatalogError.malformed(file: file, problem: "\(field) interface name '\(parts[1].prefix(40))' is longer than 15 bytes")
            }
            try ApplianceConfig.validateName(String(parts[1]), what: "\(field) interface name", file: file)
            return .tap(namespace: String(parts[0]), interface: String(parts[1]))
        }
        throw CatalogError.malformed(file: file, problem: "\(field) '\(backend.prefix(80))' must be switch:<name> or tap:<netns>/<ifname>")
    }

    /// The six MAC bytes; throws naming `field` unless six two-digit hex bytes, unicast, not all zero.
    public func macBytes(file: String, field: String) throws -> [UInt8] {
        let parts = mac.split(separator: ":", omittingEmptySubsequences: false)
        let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        guard parts.count == 6, bytes.count == 6 else {
            throw CatalogError.malformed(file: file, problem: "\(field) '\(mac.prefix(40))' is not a MAC address (six two-digit hex bytes separated by colons)")
        }
        guard bytes[0] & 1 == 0, bytes.contains(where: { $0 != 0 }) else {
            throw CatalogError.malformed(file: file, problem: "\(field) \(mac) is multicast or all zeros; a device needs a unicast address")
        }
        return bytes
    }

    /// Checks `address` if present: dotted IPv4 with a prefix length 0...32.
    public func validateAddress(file: String, field: String) throws {
        guard let address else { return }
        let halves = address.split(separator: "/", omittingEmptySubsequences: false)
        let octets = halves.first.map { $0.split(separator: ".", omittingEmptySubsequences: false) } ?? []
        let valid = halves.count == 2 && octets.count == 4
            && octets.allSatisfy { $0.count <= 3 && UInt8($0) != nil }
            && (Int(halves[1]).map { (0...32).contains($0) } ?? false) && halves[1].count <= 2
        guard valid else {
            throw CatalogError.malformed(file: file, problem: "\(field) '\(address.prefix(40))' must be an IPv4 address with a prefix length, e.g. 10.0.0.2/24")
        }
    }

    /// Every check, naming `interfaces[index].<field>` in errors.
    func validate(file: String, index: Int) throws {
        _ = try macBytes(file: file, field: "interfaces[\(index)].mac")
        _ = try parsedBackend(file: file, field: "interfaces[\(index)].backend")
        try validateAddress(file: file, field: "interfaces[\(index)].address")
    }
}
