import Logging

/// The virtio-mmio transport, version 2 ("modern", virtio 1.x §4.2.2): a 4 KiB register window per
/// device. It negotiates features, holds the queue configuration the driver writes, turns queue
/// notifications into device work, and raises the device's interrupt.
///
/// A misbehaving driver gets a defined answer: writes at the wrong time or width are ignored, invalid
/// queue setups are refused (QueueReady stays 0), and a corrupt ring puts the device into
/// DEVICE_NEEDS_RESET until the driver resets it.
///
/// Two kinds of lock: `state` guards the registers and is held only briefly; one `queueWork` lock
/// per queue serialises that queue's runs, which call the device and may block for seconds (a disk
/// chunk coming over a WAN). Per queue, because virtio-net's receive queue is filled by backend
/// threads (`runDeviceInitiated`) while its transmit queue runs, and a transmit may deliver a frame
/// to the same device (an echo, a switch looping back) before it returns. The driver's interrupt
/// handler reads InterruptStatus and writes InterruptACK with interrupts off, so those never wait for
/// a queue run; writes that change what a run sees (reset, queue setup) take every queue's lock.
public final class VirtioMMIOTransport: BusDevice {
    // Register offsets (virtio 1.x §4.2.2, Table "MMIO Device Register Layout").
    static let magicValueRegister: UInt64 = 0x000
    static let versionRegister: UInt64 = 0x004
    static let deviceIDRegister: UInt64 = 0x008
    static let vendorIDRegister: UInt64 = 0x00c
    static let deviceFeaturesRegister: UInt64 = 0x010
    static let deviceFeaturesSelectRegister: UInt64 = 0x014
    static let driverFeaturesRegister: UInt64 = 0x020
    static let driverFeaturesSelectRegister: UInt64 = 0x024
    static let queueSelectRegister: UInt64 = 0x030
    static let queueSizeMaximumRegister: UInt64 = 0x034
    static let queueSizeRegister: UInt64 = 0x038
    static let queueReadyRegister: UInt64 = 0x044
    static let queueNotifyRegister: UInt64 = 0x050
    static let interruptStatusRegister: UInt64 = 0x060
    static let interruptAcknowledgeRegister: UInt64 = 0x064
    static let statusRegister: UInt64 = 0x070
    static let queueDescriptorLowRegister: UInt64 = 0x080
    static let queueDescriptorHighRegister: UInt64 = 0x084
    static let queueDriverLowRegister: UInt64 = 0x090
    static let queueDriverHighRegister: UInt64 = 0x094
    static let queueDeviceLowRegister: UInt64 = 0x0a0
    static let queueDeviceHighRegister: UInt64 = 0x0a4
    static let configGenerationRegister: UInt64 = 0x0fc
    static let configurationSpace: UInt64 = 0x100
    static let windowSize: UInt64 = 0x1000

    /// "virt" little-endian.
    static let magicValue: UInt32 = 0x7472_6976
    static let modernVersion: UInt32 = 2
    /// Vendor ID reported to the driver ("SVM\0"); drivers do not interpret it.
    static let vendorID: UInt32 = 0x004d_5653
    /// InterruptStatus bits (§4.2.2): used buffer notification, configuration change.
    static let interruptUsedBuffer: UInt32 = 1
    static let interruptConfigurationChange: UInt32 = 2

    /// Everything the transport remembers, as a Codable value for snapshots (Firecracker's persist.rs idea).
    public struct State: Codable, Sendable, Equatable {
        var deviceFeaturesSelect: UInt32 = 0
        var driverFeaturesSelect: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var queueSelect: UInt32 = 0
        var queues: [Virtqueue]
        var interruptStatus: UInt32 = 0
        var status: UInt32 = 0
        var configGeneration: UInt32 = 0
    }

    public let device: any VirtioDevice
    let memory: GuestMemory
    private let interrupt: any InterruptLine
    /// Ring errors and refused queue setups, by reason; guest-triggered, so counted and the log rate-limited.
    public let guestErrors = GuestErrorCounters()
    private let warnings: RateLimitedWarnings
    private let state: Locked<State>
    /// One per queue, held for a whole run of that queue; all of them (in index order) by every
    /// register write except InterruptACK and QueueNotify. Taken before `state`, never after.
    private let queueWork: [Locked<Void>]
    /// While true (the machine is paused), device-initiated runs are refused: nothing changes guest
    /// memory or queue state until the machine resumes.
    private let deviceRunsHeld = Locked(false)

    public init(device: any VirtioDevice, memory: GuestMemory, interrupt: any InterruptLine, logger: Logger) {
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        self.warnings = RateLimitedWarnings(logger: logger)
        state = Locked(State(queues: device.queueMaximumSizes.map(Virtqueue.init(maximumSize:))))
        queueWork = device.queueMaximumSizes.map { _ in Locked(()) }
    }

    /// Runs `body` holding every queue's lock, in index order (so two callers never deadlock).
    private func withEveryQueue<Result>(_ body: () throws -> Result) rethrows -> Result {
        func hold(from index: Int) throws -> Result {
            guard index < queueWork.count else { return try body() }
            return try queueWork[index].withLock { _ in try hold(from: index + 1) }
        }
        return try hold(from: 0)
    }

    /// Everything this device refused so far (for `Machine.metrics()`).
    public func errorSnapshot() -> VirtioErrorSnapshot {
        var refusals = guestErrors.values
        for (reason, count) in device.requestRefusals?.values ?? [:] { refusals[reason, default: 0] &+= count }
        return VirtioErrorSnapshot(device: device.metricsName, refusals: refusals, suppressedLogLines: warnings.suppressed)
    }

    /// Logs the summary of warnings still held back (call when the machine stops).
    public func flushWarnings() { warnings.flush() }

    /// The transport's state, to be saved with a snapshot (after any queue run in progress).
    public func snapshot() -> State { withEveryQueue { state.withLock { $0 } } }

    /// Replaces the transport's state with a saved one (same device type and queue count). A saved
    /// ready queue must pass the check a guest's QueueReady write passes (`Virtqueue.isValid`): a
    /// restored machine runs its queues at once, and a vmstate.json with rings outside guest RAM made
    /// the ring arithmetic overflow and trap the VMM (found by Fuzz/fuzz-vmstate).
    public func restore(_ saved: State) throws {
        guard saved.queues.map(\.maximumSize) == device.queueMaximumSizes else {
            throw HypervisorError.invalidConfiguration("virtio snapshot has queues \(saved.queues.map(\.maximumSize)), device has \(device.queueMaximumSizes)")
        }
        for (index, queue) in saved.queues.enumerated() where queue.isReady && !queue.isValid(in: memory) {
            throw HypervisorError.invalidSnapshot("virtio queue \(index) is ready but its size \(queue.size) or rings (descriptors 0x\(String(queue.descriptorTable, radix: 16)), available 0x\(String(queue.availableRing, radix: 16)), used 0x\(String(queue.usedRing, radix: 16))) do not fit guest RAM")
        }
        withEveryQueue { state.withLock { $0 = saved } }
        // The device learns the features the restored driver negotiated (e.g. virtio-net's header).
        if saved.status & VirtioStatus.featuresOK != 0 { device.featuresAccepted(saved.driverFeatures) }
    }

    var offeredFeatures: UInt64 { device.features | VirtioFeature.version1 }

    /// Current device status register (for tests and diagnostics).
    public var status: UInt32 { state.withLock { $0.status } }
    public var interruptStatus: UInt32 { state.withLock { $0.interruptStatus } }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        if offset >= Self.configurationSpace {
            device.readConfiguration(offset: Int(offset - Self.configurationSpace), into: data)
            return
        }
        // Control registers are 32-bit, aligned (§4.2.2.2); anything else reads as 0.
        guard data.count == 4, offset % 4 == 0 else {
            data.storeLittleEndian(0)
            return
        }
        let value: UInt32 = state.withLock { state in
            switch offset {
            case Self.magicValueRegister: return Self.magicValue
            case Self.versionRegister: return Self.modernVersion
            case Self.deviceIDRegister: return device.deviceType
            case Self.vendorIDRegister: return Self.vendorID
            case Self.deviceFeaturesRegister:
                switch state.deviceFeaturesSelect {
                case 0: return UInt32(truncatingIfNeeded: offeredFeatures)
                case 1: return UInt32(truncatingIfNeeded: offeredFeatures >> 32)
                default: return 0
                }
            case Self.queueSizeMaximumRegister:
                return state.queues.indices.contains(Int(state.queueSelect)) ? UInt32(state.queues[Int(state.queueSelect)].maximumSize) : 0
            case Self.queueReadyRegister:
                return state.queues.indices.contains(Int(state.queueSelect)) && state.queues[Int(state.queueSelect)].isReady ? 1 : 0
            case Self.interruptStatusRegister: return state.interruptStatus
            case Self.statusRegister: return state.status
            case Self.configGenerationRegister: return state.configGeneration
            default: return 0
            }
        }
        data.storeLittleEndian(UInt64(value))
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        if offset >= Self.configurationSpace {
            device.writeConfiguration(offset: Int(offset - Self.configurationSpace), from: data)
            return
        }
        guard data.count == 4, offset % 4 == 0 else { return }
        let value = UInt32(truncatingIfNeeded: data.littleEndianValue)
        switch offset {
        case Self.interruptAcknowledgeRegister:
            state.withLock { $0.interruptStatus &= ~value }
            return
        case Self.queueNotifyRegister:
            notify(queue: Int(value))
            return
        default:
            break
        }
        var raise = false
        withEveryQueue { state.withLock { state in
            let selected = Int(state.queueSelect)
            // Queue registers may change only while that queue is not ready (§4.2.2.3).
            func configureQueue(_ change: (inout Virtqueue) -> Void) {
                guard state.queues.indices.contains(selected), !state.queues[selected].isReady,
                      state.status & VirtioStatus.featuresOK != 0, state.status & VirtioStatus.driverOK == 0 else { return }
                change(&state.queues[selected])
            }
            switch offset {
            case Self.deviceFeaturesSelectRegister: state.deviceFeaturesSelect = value
            case Self.driverFeaturesSelectRegister: state.driverFeaturesSelect = value
            case Self.driverFeaturesRegister:
                // Only while negotiating (after DRIVER, before FEATURES_OK: §3.1.1).
                guard state.status & VirtioStatus.driver != 0, state.status & VirtioStatus.featuresOK == 0 else { return }
                switch state.driverFeaturesSelect {
                case 0: state.driverFeatures = (state.driverFeatures & 0xffff_ffff_0000_0000) | UInt64(value)
                case 1: state.driverFeatures = (state.driverFeatures & 0xffff_ffff) | (UInt64(value) << 32)
                default: break
                }
            case Self.queueSelectRegister: state.queueSelect = value
            case Self.queueSizeRegister: configureQueue { $0.size = UInt16(truncatingIfNeeded: value) }
            case Self.queueDescriptorLowRegister: configureQueue { $0.descriptorTable = ($0.descriptorTable & ~0xffff_ffff) | UInt64(value) }
            case Self.queueDescriptorHighRegister: configureQueue { $0.descriptorTable = ($0.descriptorTable & 0xffff_ffff) | (UInt64(value) << 32) }
            case Self.queueDriverLowRegister: configureQueue { $0.availableRing = ($0.availableRing & ~0xffff_ffff) | UInt64(value) }
            case Self.queueDriverHighRegister: configureQueue { $0.availableRing = ($0.availableRing & 0xffff_ffff) | (UInt64(value) << 32) }
            case Self.queueDeviceLowRegister: configureQueue { $0.usedRing = ($0.usedRing & ~0xffff_ffff) | UInt64(value) }
            case Self.queueDeviceHighRegister: configureQueue { $0.usedRing = ($0.usedRing & 0xffff_ffff) | (UInt64(value) << 32) }
            case Self.queueReadyRegister:
                guard state.queues.indices.contains(selected) else { return }
                if value == 0 {
                    state.queues[selected].isReady = false
                } else if !state.queues[selected].isReady {
                    configureQueue { queue in
                        if queue.isValid(in: memory) {
                            queue.isReady = true
                        } else {
                            guestErrors.count("invalid_queue_setup")
                            warnings.warning("virtio-mmio: refusing invalid queue setup", metadata: [
                                "queue": "\(selected)", "size": "\(queue.size)",
                                "desc": "0x\(String(queue.descriptorTable, radix: 16))"])
                        }
                    }
                }
            case Self.statusRegister:
                raise = updateStatus(value, state: &state)
            default:
                break
            }
        } }
        if raise { interrupt.trigger() }
    }

    /// Runs queue `index` as a QueueNotify write of `index` does: also the entry point for
    /// notifications that arrive through an ioeventfd (`QueueDoorbell`) instead of the bus.
    public func notify(queue index: Int) {
        guard queueWork.indices.contains(index) else { return }
        queueWork[index].withLock { _ in runQueue(index) }
        // Outside every lock: the device may call out (virtio-net tells its backend that receive
        // buffers arrived, and the backend may deliver a frame at once, which takes this queue's lock).
        device.queueNotified(index)
    }

    /// Runs `work` on queue `index` at the device's initiative (virtio-net delivering a received
    /// frame from a backend thread), with the same locking and error handling as a guest-notified
    /// run: the device gets the queue only while the driver has it running (DRIVER_OK, queue ready,
    /// no reset pending) and the machine is not paused; otherwise returns nil without calling `work`.
    /// `work` returns whether it put anything in the used ring (the transport then interrupts, unless
    /// the driver asked for quiet). A ring error puts the device into DEVICE_NEEDS_RESET, as in a run.
    public func runDeviceInitiated<Result>(queue index: Int,
                                           _ work: (inout Virtqueue, GuestMemory) throws(VirtqueueError) -> (Result, used: Bool)) -> Result? {
        guard queueWork.indices.contains(index) else { return nil }
        return queueWork[index].withLock { _ -> Result? in
            guard !deviceRunsHeld.withLock({ $0 }), var queue = usableQueue(index) else { return nil }
            do throws(VirtqueueError) {
                let (result, used) = try work(&queue, memory)
                state.withLock { $0.queues[index] = queue }
                if used, !queue.interruptSuppressed(memory: memory) {
                    state.withLock { $0.interruptStatus |= Self.interruptUsedBuffer }
                    interrupt.trigger()
                }
                return result
            } catch {
                refuseBrokenQueue(index, queue: queue, error: error)
                return nil
            }
        }
    }

    /// Holds (true) or releases device-initiated runs: the machine's pause and resume. Holding waits
    /// for a device-initiated run in progress to end.
    public func holdDeviceInitiatedRuns(_ held: Bool) {
        withEveryQueue { deviceRunsHeld.withLock { $0 = held } }
    }

    /// Applies a status write; returns whether to interrupt.
    private func updateStatus(_ value: UInt32, state: inout State) -> Bool {
        if value == 0 {
            device.reset()
            let generation = state.configGeneration
            state = State(queues: device.queueMaximumSizes.map(Virtqueue.init(maximumSize:)))
            state.configGeneration = generation &+ 1
            return false
        }
        // FEATURES_OK only sticks when the driver accepted a subset of our offer including VERSION_1 (§2.2.2, §6.1).
        var accepted = value & ~VirtioStatus.deviceNeedsReset
        if accepted & VirtioStatus.featuresOK != 0, state.status & VirtioStatus.featuresOK == 0 {
            let subset = state.driverFeatures & ~offeredFeatures == 0
            if !subset || state.driverFeatures & VirtioFeature.version1 == 0 {
                accepted &= ~VirtioStatus.featuresOK
            } else {
                device.featuresAccepted(state.driverFeatures)
            }
        }
        // DRIVER_OK without successful feature negotiation would run the device on unknown terms.
        if accepted & VirtioStatus.driverOK != 0, accepted & VirtioStatus.featuresOK == 0 { accepted &= ~VirtioStatus.driverOK }
        // DEVICE_NEEDS_RESET is the device's bit: only a reset (status 0) clears it.
        state.status = accepted | (state.status & VirtioStatus.deviceNeedsReset)
        return false
    }

    /// Runs the device on a notified queue, with its `queueWork` lock held and `state` not: the device
    /// works on a copy of the queue, which goes back into the state afterwards (no other writer can
    /// change that queue meanwhile, as they all wait for its `queueWork` lock).
    private func runQueue(_ index: Int) {
        guard var queue = usableQueue(index) else { return }
        do {
            // Each completed request is announced at once, unless the driver asked for quiet.
            try device.processQueue(index, queue: &queue, memory: memory) { progress in
                guard !progress.interruptSuppressed(memory: memory) else { return }
                state.withLock { $0.interruptStatus |= Self.interruptUsedBuffer }
                interrupt.trigger()
            }
            state.withLock { $0.queues[index] = queue }
        } catch {
            refuseBrokenQueue(index, queue: queue, error: error)
        }
    }

    /// A copy of queue `index` if the driver has it running: DRIVER_OK, no reset pending, ready.
    private func usableQueue(_ index: Int) -> Virtqueue? {
        state.withLock { state -> Virtqueue? in
            guard state.status & VirtioStatus.driverOK != 0, state.status & VirtioStatus.deviceNeedsReset == 0,
                  state.queues.indices.contains(index), state.queues[index].isReady else { return nil }
            return state.queues[index]
        }
    }

    /// A corrupt ring: count it, and tell the driver the device needs a reset.
    private func refuseBrokenQueue(_ index: Int, queue: Virtqueue, error: VirtqueueError) {
        guestErrors.count(error.reason)
        warnings.warning("virtio-mmio: queue error, device needs reset", metadata: ["queue": "\(index)", "error": "\(error)"])
        state.withLock { state in
            state.queues[index] = queue
            state.status |= VirtioStatus.deviceNeedsReset
            state.interruptStatus |= Self.interruptConfigurationChange
        }
        interrupt.trigger()
    }
}

extension VirtioMMIOTransport: GuestErrorSource {
    func guestErrorCounts() -> [String: UInt64] { errorSnapshot().refusals }
}
