import Hypervisor
import Logging
import Synchronization

/// The `NetworkBackendFactory` of one streamvm process: named host switches, made on first use and
/// shared by every machine of the process that names them, and tap devices in named network
/// namespaces. A switch lives in the process that made it; machines in separate processes meet
/// through taps (and the user's bridge or routes in the namespace), not through a switch name.
public final class HostNetworkBackends: NetworkBackendFactory {
    private let switches = Mutex<[String: NetworkSwitch]>([:])
    private let logger: Logger

    public init(logger: Logger = Logger(label: "streamvm.network")) {
        self.logger = logger
    }

    /// The switch `name`, made now if no machine of this process used it yet.
    public func networkSwitch(named name: String) -> NetworkSwitch {
        switches.withLock { switches in
            if let existing = switches[name] { return existing }
            let made = NetworkSwitch(name: name, logger: logger)
            switches[name] = made
            return made
        }
    }

    /// Every switch made so far (for metrics and for stopping them).
    public var allSwitches: [NetworkSwitch] { switches.withLock { Array($0.values) } }

    public func switchPort(switch name: String, mac: MACAddress) throws -> any NetworkBackend {
        try networkSwitch(named: name).addPort(PortConfiguration(name: mac.description, mac: mac))
    }

    public func tap(namespace: String, interface: String) throws -> any NetworkBackend {
        try TapBackend(TapBackend.Configuration(interface: interface, namespace: namespace), logger: logger)
    }

    /// Stops every switch (their forwarding threads); ports already handed out stop delivering.
    public func stop() {
        for item in switches.withLock({ Array($0.values) }) { item.stop() }
    }
}
