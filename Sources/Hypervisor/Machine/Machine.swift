import CKVM
import Dispatch
import Foundation
import Glibc
import Logging

/// A VM: guest RAM, vCPU threads, devices, and the lifecycle (start, pause, resume, stop) that
/// drives them. `Machine.init` creates the VM and hands device assembly to a `DeviceManager`;
/// the lifecycle lives in Machine+Lifecycle.swift, snapshots in Snapshot/Machine+Snapshot.swift.
public final class Machine: @unchecked Sendable {
    /// Signal used only to interrupt a vCPU thread's KVM_RUN (its handler does nothing).
    static let kickSignal = SIGUSR2
    /// How long `waitUntilStopped` waits for vCPU threads to leave the guest after a stop, and
    /// `pause` for every vCPU to park.
    static let joinLimit: Duration = .seconds(10)
    /// Device ids of the built-in devices (snapshot state is keyed by them).
    static let serialDeviceID = "serial0"
    static func diskDeviceID(_ index: Int) -> String { "virtio-blk\(index)" }

    /// The configuration this machine was made with, less its boot image (`image` is nil): the
    /// kernel and initrd are copied into guest RAM by `init` and not kept, so a running VMM does not
    /// hold a second copy of them (for the Linux appliance, 51 MiB of kernel). Nothing needs them
    /// later: a snapshot saves guest RAM, where the loaded kernel is.
    public let configuration: MachineConfiguration
    public let memory: GuestMemory
    public let console: ConsoleMonitor
    public let serial: Serial8250
    public let blockDevices: [VirtioMMIOTransport]
    /// Every device of this machine, with their windows, interrupts, metrics and snapshot state.
    public let devices: DeviceManager
    /// ioeventfd-served queue notifications (empty when `useEventFDs` is off or unsupported).
    var doorbells: [QueueDoorbell] { devices.doorbells }
    let system: KVMSystem
    let virtualMachine: VirtualMachine
    let vcpus: [VCPU]
    /// The CPUID table each vCPU was given (by policy and the configuration's adjustment, or by the
    /// snapshot it resumed from): a snapshot records it, so a guest resumed again keeps what it was told.
    let vcpuCPUID: [[CPUIDEntry]]
    let dispatcher: ExitDispatcher
    let logger: Logger
    /// Serves guest RAM from the snapshot when the machine was restored lazily, or from
    /// `MachineConfiguration.pageSource` when one was given.
    public let pageFaultHandler: PageFaultHandler?

    let stopReason = Locked<StopReason?>(nil)
    let stopped = DispatchSemaphore(value: 0)
    let threadsFinished = DispatchSemaphore(value: 0)
    let threadIDs: Locked<[pthread_t?]>
    let timingState: Locked<BootTiming>
    /// Pause handshake with the vCPU threads.
    let parking: VCPUParking
    /// Serialises start, pause, resume and snapshots (stop never waits for it).
    let lifecycleLock = NSLock()
    let phase = Locked(Phase.notStarted)
    let startedAt = Locked<ContinuousClock.Instant?>(nil)
    /// One exit counter set per vCPU.
    let exitCounters: [ExitCounters]
    /// Serialises joiners of the vCPU threads.
    let joinLock = NSLock()
    let finishedRunning = Locked(false)

    /// Lifecycle phases before a stop; once a stop reason is set the machine is `.stopped`.
    enum Phase {
        case notStarted, running, paused
    }

    /// Whether every vCPU thread has been joined after a stop.
    var hasFinishedRunning: Bool { finishedRunning.withLock { $0 } }

    public var timing: BootTiming { timingState.withLock { $0 } }

    public init(configuration: MachineConfiguration, logger: Logger) throws {
        let created = ContinuousClock.now
        timingState = Locked(BootTiming(created: created))
        var kept = configuration
        kept.image = nil
        self.configuration = kept
        self.logger = logger
        guard configuration.vcpuCount >= 1 else { throw HypervisorError.invalidConfiguration("at least one vCPU is needed") }
        guard configuration.memorySize >= 2 << 20 else { throw HypervisorError.invalidConfiguration("guest RAM must be at least 2 MiB") }

        system = try KVMSystem()
        guard configuration.vcpuCount <= min(system.maximumVCPUs, 254) else {
            throw HypervisorError.invalidConfiguration("\(configuration.vcpuCount) vCPUs exceed this host's limit of \(min(system.maximumVCPUs, 254))")
        }
        virtualMachine = try system.createVirtualMachine()
        try virtualMachine.createPlatformDevices()
        memory = try GuestMemory(size: configuration.memorySize, backing: configuration.memoryBacking)
        try virtualMachine.mapMemory(memory)
        threadIDs = Locked([pthread_t?](repeating: nil, count: configuration.vcpuCount))
        parking = VCPUParking(vcpuCount: configuration.vcpuCount)
        exitCounters = (0..<configuration.vcpuCount).map { _ in ExitCounters() }

        // Devices. Their callbacks reach the machine through a box filled in once `self` exists.
        let owner = MachineReference()
        if let restore = configuration.restore {
            guard restore.state.memorySize == configuration.memorySize, restore.state.vcpuCount == configuration.vcpuCount else {
                throw HypervisorError.invalidSnapshot("snapshot has \(restore.state.memorySize >> 20) MiB and \(restore.state.vcpuCount) vCPUs, the machine \(configuration.memorySize >> 20) MiB and \(configuration.vcpuCount)")
            }
            let handler = try PageFaultHandler(memory: memory, source: restore.pages, waitMode: restore.waitMode, fetchThreads: restore.fetchThreads,
                                               onError: { owner.machine?.stop(.failure("guest memory unavailable, VM stopped: \($0)")) })
            handler.start()
            if restore.loading == .eager { try handler.populateAll() } else if !restore.prefetchPages.isEmpty { try handler.populate(pages: restore.prefetchPages) }
            pageFaultHandler = handler
        } else if let source = configuration.pageSource {
            let handler = try PageFaultHandler(memory: memory, source: source,
                                               onError: { owner.machine?.stop(.failure("guest memory unavailable, VM stopped: \($0)")) })
            handler.start()
            pageFaultHandler = handler
        } else {
            pageFaultHandler = nil
        }
        let console = ConsoleMonitor(readyMarker: configuration.readyMarker, forward: configuration.consoleOutput,
                                     onReady: { owner.machine?.markReady() })
        self.console = console
        let devices = DeviceManager(memory: memory, virtualMachine: virtualMachine, useEventFDs: configuration.useEventFDs, logger: logger,
                                    stop: { owner.machine?.stop($0) })
        // The UART raises its interrupt from the vCPU thread that wrote it (see `legacyInterrupt`).
        serial = Serial8250(interrupt: devices.legacyInterrupt(gsi: Serial8250.com1IRQ), output: { console.receive($0) })
        blockDevices = try Self.attachDevices(configuration, serial: serial, to: devices)
        self.devices = devices
        dispatcher = ExitDispatcher(ioBus: devices.ioBus, mmioBus: devices.mmioBus)

        var commandLine = configuration.commandLine
        if case .linux? = configuration.image, configuration.announceVirtioOnCommandLine {
            for word in devices.kernelCommandLineWords { commandLine += " " + word }
        }
        var entry: BootEntry?
        if configuration.restore == nil {
            guard let image = configuration.image else { throw HypervisorError.invalidConfiguration("a boot image is needed unless a snapshot is restored") }
            entry = try BootLoader.load(image, commandLine: commandLine, vcpuCount: configuration.vcpuCount,
                                        virtioDevices: devices.acpiDevices, cmosClock: devices.deviceIDs.contains(CMOSClock.deviceID),
                                        into: memory)
        }
        try configuration.restore?.state.platform.apply(to: virtualMachine)
        let supported = try system.supportedCPUID()
        let policy = CPUIDPolicy(vcpuCount: configuration.vcpuCount)
        var vcpus: [VCPU] = []
        var vcpuCPUID: [[CPUIDEntry]] = []
        for index in 0..<configuration.vcpuCount {
            let vcpu = try virtualMachine.createVCPU(index: index)
            if let restore = configuration.restore {
                try restore.state.vcpus[index].apply(to: vcpu)
                vcpus.append(vcpu)
                vcpuCPUID.append(restore.state.vcpus[index].cpuidEntries)
                continue
            }
            var cpuid = policy.entries(from: supported, apicID: index)
            if let adjust = configuration.cpuidAdjustment { cpuid = adjust(cpuid) }
            let refused = try VCPUSetup.configure(vcpu, cpuid: cpuid, entry: index == 0 ? entry : nil)
            if !refused.isEmpty, index == 0 {
                logger.debug("host KVM refused boot MSRs", metadata: ["msrs": "\(refused.map { "0x" + String($0, radix: 16) })"])
            }
            vcpus.append(vcpu)
            vcpuCPUID.append(cpuid)
        }
        self.vcpus = vcpus
        self.vcpuCPUID = vcpuCPUID
        owner.machine = self
        if let restore = configuration.restore {
            try restore.state.checkDisks(against: configuration.disks)
            try devices.restoreStates(restore.state.devices)
            if !restore.consoleInputOnResume.isEmpty { serial.enqueueInput(restore.consoleInputOnResume) }
        }
        Self.installKickHandler()
    }

    /// Registers every device of `configuration` in order: the console UART, the platform control
    /// ports, one virtio-blk per disk, then the configuration's own devices. Returns the disks' transports.
    static func attachDevices(_ configuration: MachineConfiguration, serial: Serial8250, to devices: DeviceManager) throws -> [VirtioMMIOTransport] {
        try devices.addPortDevice(serial, id: serialDeviceID, port: Serial8250.com1Port, length: Serial8250.windowLength)
        try PlatformControlDevices().attach(to: devices)
        let disks = try configuration.disks.enumerated().map { index, disk in
            let throttle = configuration.diskLimit.flatMap { $0.isUnlimited ? nil : DiskThrottle($0) }
            return try devices.addVirtioDevice(VirtioBlock(backend: disk, throttle: throttle), id: diskDeviceID(index))
        }
        for device in configuration.devices { try device.attach(to: devices) }
        return disks
    }

    /// Installs a do-nothing handler for the kick signal, without SA_RESTART, so a signal makes
    /// KVM_RUN return EINTR instead of killing the process or being restarted.
    private static let kickHandlerInstalled: Bool = {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        return sigaction(Machine.kickSignal, &action, nil) == 0
    }()

    static func installKickHandler() { _ = kickHandlerInstalled }

    /// Threads inherit their creator's signal mask, and Dispatch worker threads (where Swift
    /// concurrency or a test runner may create the machine) block most signals; a vCPU thread must
    /// accept the kick or a stop could never interrupt KVM_RUN.
    static func unblockKickSignal() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, kickSignal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Makes every vCPU leave KVM_RUN soon: `immediate_exit` for one about to enter, a signal for
    /// one inside.
    func kickAll() {
        let threads = threadIDs.withLock { $0 }
        for (index, vcpu) in vcpus.enumerated() {
            vcpu.requestImmediateExit()
            if let thread = threads[index] { pthread_kill(thread, Machine.kickSignal) }
        }
    }

    /// One line per vCPU with its instruction pointer and mode registers, for a failure report.
    /// Only meaningful while paused or after the run ended (a running vCPU holds its registers).
    public func describeVCPUs() -> String {
        vcpus.map { vcpu in
            guard let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() else { return "vcpu\(vcpu.index): registers unavailable" }
            func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
            return "vcpu\(vcpu.index): rip=\(hex(regs.rip)) rsp=\(hex(regs.rsp)) rflags=\(hex(regs.rflags)) cr0=\(hex(sregs.cr0)) cr3=\(hex(sregs.cr3)) cr4=\(hex(sregs.cr4)) efer=\(hex(sregs.efer)) cs=\(hex(UInt64(sregs.cs.selector)))"
        }.joined(separator: "\n")
    }

    private func markReady() {
        timingState.withLock { if $0.ready == nil { $0.ready = .now } }
        if configuration.pauseAtReady { stop(.stopRequested) }
    }

    /// A vCPU thread's loop: park when asked, enter the guest, count and dispatch the exit.
    func runLoop(_ vcpu: VCPU) {
        var sawFirstExit = vcpu.index != 0
        let counters = exitCounters[vcpu.index]
        while parking.checkpoint(beforeParking: { completeExitBeforeParking(vcpu) }) {
            let exit: VCPUExit
            do {
                exit = try vcpu.runOnce()
            } catch {
                stop(.failure("vCPU \(vcpu.index): \(error)"))
                return
            }
            counters.record(exit.kind)
            if !sawFirstExit {
                sawFirstExit = true
                timingState.withLock { $0.firstExit = .now }
            }
            switch dispatcher.handle(exit) {
            case .resume:
                continue
            case let .completeRead(bytes):
                vcpu.completeRead(bytes)
            case .deliverBreakpoint:
                do {
                    var regs = try vcpu.registers()
                    regs.rip += 1 // #BP is a trap: the saved RIP points after the one-byte int3
                    try vcpu.setRegisters(regs)
                    try vcpu.injectException(vector: 3)
                } catch {
                    stop(.failure("vCPU \(vcpu.index): cannot deliver breakpoint: \(error)"))
                }
            case let .stop(reason):
                stop(reason)
                return
            }
        }
    }

    /// Before parking, finishes the port or MMIO instruction whose exit was just handled (KVM_RUN
    /// with immediate_exit: api.rst), so a paused vCPU's registers are past it and consistent.
    private func completeExitBeforeParking(_ vcpu: VCPU) {
        do {
            try vcpu.completePendingExit()
        } catch {
            stop(.failure("vCPU \(vcpu.index): cannot complete its last exit before pausing: \(error)"))
        }
    }
}

/// Lets device callbacks created before `self` is fully initialised reach the machine later.
private final class MachineReference: @unchecked Sendable {
    weak var machine: Machine?
}
