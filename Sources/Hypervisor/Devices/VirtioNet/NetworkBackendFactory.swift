/// Makes the backend an appliance's interface names (`switch:<name>`, `tap:<netns>/<ifname>` in
/// appliance.json): the `Network` module implements it, the CLI passes it to whatever builds the
/// machine's `VirtioNetDevice`s, so neither the VMM nor Catalog depends on the switch or the tap.
public protocol NetworkBackendFactory: Sendable {
    /// A new port on the host switch `name` for a guest whose MAC is `mac` (the switch refuses
    /// frames sent from any other source address).
    func switchPort(switch name: String, mac: MACAddress) throws -> any NetworkBackend
    /// The tap device `interface` inside network namespace `namespace`.
    func tap(namespace: String, interface: String) throws -> any NetworkBackend
}
