import Catalog
import HostNetwork
import Hypervisor

/// The virtio-net devices an appliance's `interfaces` (appliance.json) ask for, and the `ip=` a
/// Linux appliance reads from its command line to bring its first addressed interface up.
enum ApplianceNetwork {
    /// One device per interface, in order (a snapshot's device records follow the same order).
    /// `run` starts one appliance per process, so a `switch:` backend would be a switch with one
    /// port; it is refused with the way to connect separate runs instead.
    static func devices(for config: ApplianceConfig, file: String, backends: HostNetworkBackends) throws -> [any MachineDevice] {
        var devices: [any MachineDevice] = []
        for (index, interface) in (config.interfaces ?? []).enumerated() {
            let field = "interfaces[\(index)]"
            let mac = try MACAddress(parsing: interface.mac)
            let backend: any NetworkBackend
            switch try interface.parsedBackend(file: file, field: "\(field).backend") {
            case .switchPort(let name):
                throw CatalogError.malformed(file: file, problem: "\(field).backend switch:\(name): a host switch joins machines of one streamvm process and run starts one appliance; connect separate runs with tap:<netns>/<ifname> and a bridge in that namespace (docs/network.md)")
            case .tap(let namespace, let name):
                do {
                    backend = try backends.tap(namespace: namespace, interface: name)
                } catch {
                    throw CatalogError.malformed(file: file, problem: "\(field).backend tap:\(namespace)/\(name): \(error)")
                }
            }
            devices.append(VirtioNetDevice(backend: backend, mac: mac, id: "virtio-net\(index)"))
        }
        return devices
    }

    /// `commandLine` with `ip=<address>:::<netmask>::eth<i>:off` for the first interface that has an
    /// address (Linux's in-kernel IP autoconfiguration reads one `ip=`; eth<i> is the kernel's
    /// name for the i-th virtio-net device before any renaming). Unchanged when none has one or the
    /// command line already says `ip=`.
    static func commandLine(_ commandLine: String, interfaces: [NetworkInterfaceConfig]?) -> String {
        let words = commandLine.split(separator: " ")
        guard !words.contains(where: { $0.hasPrefix("ip=") }),
              let (index, interface) = (interfaces ?? []).enumerated().first(where: { $0.element.address != nil }),
              let address = interface.address else { return commandLine }
        let halves = address.split(separator: "/")
        guard halves.count == 2, let prefix = Int(halves[1]), (0...32).contains(prefix) else { return commandLine }
        let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << (32 - prefix)
        let netmask = (0..<4).map { String((mask >> (24 - 8 * UInt32($0))) & 0xff) }.joined(separator: ".")
        let parameter = "ip=\(halves[0]):::\(netmask)::eth\(index):off"
        return commandLine.isEmpty ? parameter : commandLine + " " + parameter
    }
}
