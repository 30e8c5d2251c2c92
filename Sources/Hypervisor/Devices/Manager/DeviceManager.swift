import Foundation
import Logging

/// Assembles a machine's devices through one interface: port-I/O and MMIO devices on their buses,
/// MMIO windows and interrupt lines (GSIs) handed out in order, virtio devices behind a virtio-mmio
/// transport with ioeventfd doorbells, the ACPI DSDT entries and `virtio_mmio.device=` command-line
/// words that tell the guest where they are, per-device metrics, and per-device snapshot state keyed
/// by a device id. A new device (virtio-net, a timer, a balloon) is a `MachineDevice` in
/// `MachineConfiguration.devices`; `Machine` itself never changes for it.
///
/// Built on the thread that creates the machine, before any vCPU runs; read-only afterwards.
public final class DeviceManager: @unchecked Sendable {
    /// The last IOAPIC input: KVM's in-kernel IOAPIC has 24 pins (KVM_IOAPIC_NUM_PINS).
    static let lastGSI: UInt32 = 23
    /// MMIO windows are handed out below the IOAPIC (0xfec00000) and above the virtio base.
    static let mmioWindowLimit = UInt64(GuestLayout.ioAPICAddress)

    /// A device as registered: its id, and what the manager keeps about it.
    struct Entry {
        let id: String
        let persistent: (any PersistentDevice)?
        let metrics: (any DeviceMetricsSource)?
        /// Set for devices whose guest-triggered refusals are counted (virtio transports).
        var guestErrors: (any GuestErrorSource)? = nil
    }

    public let memory: GuestMemory
    public let virtualMachine: VirtualMachine
    public let logger: Logger
    /// Whether queue notifications use ioeventfds and interrupts irqfds (host permitting).
    public let usesEventFDs: Bool
    private(set) var ioBus = Bus()
    private(set) var mmioBus = Bus()
    /// MMIO windows for the DSDT (virtio-mmio, and devices added with an ACPI ID), in registration order.
    private(set) var acpiDevices: [ACPITables.MMIODevice] = []
    /// `virtio_mmio.device=4K@0x…:gsi` for kernels that find virtio-mmio devices on the command line.
    public private(set) var kernelCommandLineWords: [String] = []
    private(set) var doorbells: [QueueDoorbell] = []
    private(set) var transports: [VirtioMMIOTransport] = []
    /// Run once when the machine's run has ended (a network device releases its backend's port).
    private var stopActions: [@Sendable () -> Void] = []
    private var entries: [Entry] = []
    private var nextWindow = GuestLayout.virtioMMIOBase
    private var nextGSI = GuestLayout.virtioFirstGSI
    /// Ends the machine's run (a reset or power-off device calls this). Safe from any thread, and
    /// holds the machine weakly: a device may keep it without keeping the machine alive.
    public let requestStop: @Sendable (StopReason) -> Void

    init(memory: GuestMemory, virtualMachine: VirtualMachine, useEventFDs: Bool, logger: Logger,
         stop: @escaping @Sendable (StopReason) -> Void) {
        self.memory = memory
        self.virtualMachine = virtualMachine
        usesEventFDs = useEventFDs && virtualMachine.supportsEventFDs
        self.logger = logger
        requestStop = stop
    }

    /// Ids of the registered devices, in registration order.
    public var deviceIDs: [String] { entries.map(\.id) }

    /// Adds a device on the port-I/O bus at a fixed port range (legacy devices have fixed ports).
    public func addPortDevice(_ device: any BusDevice, id: String, port: UInt64, length: UInt64) throws {
        let metered = try register(device, id: id)
        try ioBus.insert(metered, at: port, length: length)
    }

    /// Adds a device on the MMIO bus in the next free window of `length` bytes (rounded up to 4 KiB);
    /// returns the window's guest-physical address. With `acpiHardwareID` the window (and `gsi`,
    /// from `allocateInterrupt`) is described in the DSDT under that ID, for the guest's driver to find.
    @discardableResult
    public func addMMIODevice(_ device: any BusDevice, id: String, length: UInt64 = GuestLayout.virtioMMIOStride,
                              acpiHardwareID: String? = nil, gsi: UInt32? = nil) throws -> UInt64 {
        let address = try allocateWindow(length: length)
        let metered = try register(device, id: id)
        try mmioBus.insert(metered, at: address, length: length)
        if let acpiHardwareID {
            acpiDevices.append(ACPITables.MMIODevice(address: address, length: length, gsi: gsi, hardwareID: acpiHardwareID))
        }
        return address
    }

    /// The next free GSI (an IOAPIC pin) and a line that pulses it: through an irqfd when event
    /// fds are in use (callable from any thread without a vCPU), else KVM_IRQ_LINE.
    public func allocateInterrupt() throws -> (gsi: UInt32, line: any InterruptLine) {
        guard nextGSI <= Self.lastGSI else {
            throw HypervisorError.invalidConfiguration("no interrupt line left for another device (GSIs \(GuestLayout.virtioFirstGSI)-\(Self.lastGSI) are taken)")
        }
        let gsi = nextGSI
        nextGSI += 1
        return (gsi, try interruptLine(gsi: gsi))
    }

    /// A line for a fixed GSI (a legacy ISA device), pulsed with KVM_IRQ_LINE: delivered before the
    /// vCPU that triggered it re-enters, which an irqfd on an IOAPIC pin (a kernel work item) is not.
    public func legacyInterrupt(gsi: UInt32) -> any InterruptLine {
        IRQChipLine(gsi: gsi, machine: virtualMachine)
    }

    /// Adds a virtio device behind its own virtio-mmio transport: a window, a GSI, a DSDT entry,
    /// a command-line word, and one ioeventfd doorbell per queue. Returns the transport.
    @discardableResult
    public func addVirtioDevice(_ device: any VirtioDevice, id: String) throws -> VirtioMMIOTransport {
        let length = GuestLayout.virtioMMIOStride
        let address = try allocateWindow(length: length)
        let (gsi, line) = try allocateInterrupt()
        let transport = VirtioMMIOTransport(device: device, memory: memory, interrupt: line, logger: logger)
        let metered = try register(transport, id: id, metrics: device as? any DeviceMetricsSource)
        entries[entries.count - 1].guestErrors = transport
        try mmioBus.insert(metered, at: address, length: length)
        if usesEventFDs {
            doorbells += try device.queueMaximumSizes.indices.map {
                try QueueDoorbell(transport: transport, queueIndex: $0, windowAddress: address, machine: virtualMachine)
            }
        }
        acpiDevices.append(ACPITables.MMIODevice(address: address, length: length, gsi: gsi))
        transports.append(transport)
        // Kernels with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES find the device from this parameter; others
        // from the DSDT (ACPITables). A kernel that sees both logs one failed duplicate probe.
        kernelCommandLineWords.append("virtio_mmio.device=4K@0x\(String(address, radix: 16)):\(gsi)")
        return transport
    }

    /// Has `action` run once when the machine's run has ended and its threads are joined.
    public func onStop(_ action: @escaping @Sendable () -> Void) {
        stopActions.append(action)
    }

    /// Runs the stop actions (once: they are dropped afterwards).
    func runStopActions() {
        let actions = stopActions
        stopActions = []
        actions.forEach { $0() }
    }

    /// The machine pauses: no queue runs, guest-notified or device-initiated, until `resumeQueues`.
    func pauseQueues() {
        doorbells.forEach { $0.pause() }
        transports.forEach { $0.holdDeviceInitiatedRuns(true) }
    }

    /// The machine resumes: queues run again, and each doorbell looks at its queue once.
    func resumeQueues() {
        transports.forEach { $0.holdDeviceInitiatedRuns(false) }
        doorbells.forEach { $0.resume() }
    }

    /// Metrics of every registered device, in registration order.
    func deviceMetrics() -> [DeviceMetrics] {
        entries.compactMap { entry in
            entry.metrics.map { DeviceMetrics(name: entry.id, counters: $0.counters, guestErrors: entry.guestErrors?.guestErrorCounts() ?? [:]) }
        }
    }

    /// Logs the summaries of guest-error warnings still held back by rate limiting (at a stop).
    func flushGuestErrorWarnings() {
        for entry in entries { entry.guestErrors?.flushWarnings() }
    }

    /// Flushes every device (disks) and saves each persistent device's state, keyed by its id.
    func saveStates() throws -> [DeviceStateRecord] {
        var records: [DeviceStateRecord] = []
        for entry in entries {
            guard let device = entry.persistent else { continue }
            try device.prepareForSnapshot()
            let data = try device.saveState()
            records.append(DeviceStateRecord(id: entry.id, kind: device.stateKind, state: String(decoding: data, as: UTF8.self)))
        }
        return records
    }

    /// Loads saved states into the devices with the same ids. The device sets must match exactly: a
    /// saved device this machine lacks, or a device with no saved state, is an error naming it.
    func restoreStates(_ records: [DeviceStateRecord]) throws {
        let persistent = entries.filter { $0.persistent != nil }
        let saved = Dictionary(records.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        guard saved.count == records.count else { throw HypervisorError.invalidSnapshot("device ids in the snapshot are not unique") }
        if let missing = records.first(where: { record in !persistent.contains { $0.id == record.id } }) {
            throw HypervisorError.invalidSnapshot("the snapshot has state for device \"\(missing.id)\" (\(missing.kind)), which this machine does not have (devices: \(persistent.map(\.id).joined(separator: ", ")))")
        }
        for entry in persistent {
            guard let device = entry.persistent else { continue }
            guard let record = saved[entry.id] else {
                throw HypervisorError.invalidSnapshot("the snapshot has no state for device \"\(entry.id)\" (\(device.stateKind))")
            }
            guard record.kind == device.stateKind else {
                throw HypervisorError.invalidSnapshot("device \"\(entry.id)\" was saved as \(record.kind), this machine has \(device.stateKind)")
            }
            try device.restoreState(Data(record.state.utf8))
        }
    }

    private func register(_ device: any BusDevice, id: String, metrics: (any DeviceMetricsSource)? = nil) throws -> any BusDevice {
        guard !id.isEmpty, !entries.contains(where: { $0.id == id }) else {
            throw HypervisorError.invalidConfiguration("device id \"\(id)\" is empty or already taken")
        }
        if let own = metrics ?? (device as? any DeviceMetricsSource) {
            entries.append(Entry(id: id, persistent: device as? any PersistentDevice, metrics: own))
            return device
        }
        let metered = MeteredBusDevice(device)
        entries.append(Entry(id: id, persistent: device as? any PersistentDevice, metrics: metered))
        return metered
    }

    private func allocateWindow(length: UInt64) throws -> UInt64 {
        let page = UInt64(GuestLayout.virtioMMIOStride)
        let rounded = (length + page - 1) / page * page
        guard length > 0, nextWindow + rounded <= Self.mmioWindowLimit else {
            throw HypervisorError.invalidConfiguration("no MMIO window of \(length) bytes left below 0x\(String(Self.mmioWindowLimit, radix: 16))")
        }
        let address = nextWindow
        nextWindow += rounded
        return address
    }

    private func interruptLine(gsi: UInt32) throws -> any InterruptLine {
        usesEventFDs ? try EventFDInterruptLine(gsi: gsi, machine: virtualMachine) : IRQChipLine(gsi: gsi, machine: virtualMachine)
    }
}

/// A device a caller adds to a machine (`MachineConfiguration.devices`): it registers itself with
/// the machine's `DeviceManager` while the machine is built.
public protocol MachineDevice: Sendable {
    func attach(to devices: DeviceManager) throws
}

/// One device's saved state in vmstate.json: the id it was registered under, its state kind, and
/// its state as JSON text.
public struct DeviceStateRecord: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var state: String
}
