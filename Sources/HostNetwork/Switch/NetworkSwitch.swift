import Foundation
import Hypervisor
import Logging
import Synchronization

/// A learning L2 switch between the appliances of one host, one `SwitchPort` per appliance.
///
/// Ports are bound to their guest's MAC, shape the link out of their guest (rate, latency, queue
/// limit) and are served round robin, so one flooding port cannot starve the others. The
/// forwarding work runs on one dedicated thread (`SwitchEngine`); senders only append to their own
/// port's queue and wake it. See docs/network.md.
public final class NetworkSwitch: Sendable {
    public let name: String
    private let engine: SwitchEngine
    private let registry = PortRegistry()
    private let pool = FramePool()
    private let logger: Logger

    /// - Parameter macAging: how long a learned MAC is trusted without traffic from it.
    public init(name: String, macAging: Duration = .seconds(300), logger: Logger = Logger(label: "streamvm.network.switch")) {
        self.name = name
        self.logger = logger
        let registry = registry
        let aging = UInt64(macAging.components.seconds) * 1_000_000_000 + UInt64(macAging.components.attoseconds / 1_000_000_000)
        self.engine = SwitchEngine(name: name, macAgingNanoseconds: max(aging, 1), pool: pool,
                                       ports: { registry.ports.withLock { $0 } }, logger: logger)
        engine.start()
    }

    deinit { engine.stop() }

    /// Adds a port for one appliance. Names and MACs must be unique on this switch.
    public func addPort(_ configuration: PortConfiguration) throws(NetworkError) -> SwitchPort {
        try configuration.validate()
        let engine = engine
        let pool = pool
        let port = try registry.ports.withLock { ports throws(NetworkError) -> SwitchPort in
            let open = ports.filter { !$0.closed.load(ordering: .relaxed) }
            if open.contains(where: { $0.name == configuration.name }) { throw .duplicatePort("port name \(configuration.name) is already on switch \(name)") }
            if let mac = configuration.mac, open.contains(where: { $0.configuration.mac == mac }) {
                throw .duplicatePort("MAC \(mac) already has a port on switch \(name)")
            }
            let port = SwitchPort(configuration: configuration, index: ports.count, pool: pool, wakeSwitch: { engine.wake() })
            ports.append(port)
            return port
        }
        engine.portsChanged()
        logger.debug("switch port added", metadata: ["switch": "\(name)", "port": "\(configuration.name)", "mac": "\(configuration.mac?.description ?? "uplink")"])
        return port
    }

    /// Every port's counters now (closed ports included: their counts stay meaningful).
    public func statistics() -> [PortStatistics] { registry.ports.withLock { $0 }.map(\.statistics) }

    /// The counters as Prometheus text exposition lines.
    public func prometheusText() -> String { statistics().prometheusText(switchName: name) }

    /// Stops the switch thread; queued frames are dropped. Ports refuse frames afterwards.
    public func stop() {
        for port in registry.ports.withLock({ $0 }) { port.disconnect() }
        engine.stop()
    }
}

/// The switch's ports, shared by callers adding ports and the switch thread picking them up.
final class PortRegistry: Sendable {
    let ports = Mutex<[SwitchPort]>([])
}
