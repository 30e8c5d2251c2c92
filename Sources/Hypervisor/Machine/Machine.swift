import CKVM
import Dispatch
import Foundation
import Glibc
import Logging

/// Everything needed to start a VM.
public struct MachineConfiguration: Sendable {
    public var memorySize: Int
    public var vcpuCount: Int
    public var image: BootImage
    public var commandLine: String
    /// One virtio-blk device per backend, in order (Linux names them vda, vdb, ...).
    public var disks: [any BlockBackend]
    public var readyMarker: String
    /// Also name virtio-mmio devices on the Linux command line (`virtio_mmio.device=`), for kernels
    /// built without ACPI; they are always described in the ACPI DSDT.
    public var announceVirtioOnCommandLine: Bool
    /// Receives every byte the guest writes to its serial console.
    public var consoleOutput: @Sendable (UInt8) -> Void
    /// Resume this saved machine instead of booting (`image` and `commandLine` are then not used).
    public var restore: RestorePlan?
    /// Stop the run (as `.stopRequested`) on the vCPU that printed the ready marker, before the guest
    /// runs on: how `streamvm snapshot --at-ready` pauses at exactly that point.
    public var pauseAtReady: Bool
    /// Serve virtio queue notifications on I/O threads through ioeventfds and raise virtio
    /// interrupts through irqfds, when the host's KVM offers both (see `QueueDoorbell`).
    public var useEventFDs = true

    public init(memorySize: Int, vcpuCount: Int = 1, image: BootImage, commandLine: String = "",
                disks: [any BlockBackend] = [], readyMarker: String = "STREAMVM-READY",
                announceVirtioOnCommandLine: Bool = true, consoleOutput: @escaping @Sendable (UInt8) -> Void = { _ in },
                restore: RestorePlan? = nil, pauseAtReady: Bool = false) {
        self.restore = restore
        self.pauseAtReady = pauseAtReady
        self.memorySize = memorySize
        self.vcpuCount = vcpuCount
        self.image = image
        self.commandLine = commandLine
        self.disks = disks
        self.readyMarker = readyMarker
        self.announceVirtioOnCommandLine = announceVirtioOnCommandLine
        self.consoleOutput = consoleOutput
    }
}

/// Moments in a machine's life, for benchmarks (`streamvm bench vmm`).
public struct BootTiming: Sendable {
    /// When `Machine.init` began (VMM start).
    public var created: ContinuousClock.Instant
    /// When the boot vCPU first left the guest: the guest has run its first instructions.
    public var firstExit: ContinuousClock.Instant?
    /// When the console first printed the ready marker.
    public var ready: ContinuousClock.Instant?
}

/// A running VM: guest RAM, vCPU threads, devices, and the stop logic that ends a run.
public final class Machine: @unchecked Sendable {
    /// Signal used only to interrupt a vCPU thread's KVM_RUN (its handler does nothing).
    static let kickSignal = SIGUSR2
    /// How long `run` waits for vCPU threads to leave the guest after a stop.
    static let joinLimit: Duration = .seconds(10)

    public let configuration: MachineConfiguration
    public let memory: GuestMemory
    public let console: ConsoleMonitor
    public let serial: Serial8250
    public let blockDevices: [VirtioMMIOTransport]
    /// ioeventfd-served queue notifications (empty when `useEventFDs` is off or unsupported).
    let doorbells: [QueueDoorbell]
    let system: KVMSystem
    let virtualMachine: VirtualMachine
    let vcpus: [VCPU]
    let dispatcher: ExitDispatcher
    let logger: Logger
    /// Serves guest RAM from the snapshot when the machine was restored lazily.
    public let pageFaultHandler: PageFaultHandler?

    private let stopReason = Locked<StopReason?>(nil)
    private let stopped = DispatchSemaphore(value: 0)
    private let threadsFinished = DispatchSemaphore(value: 0)
    private let threadIDs: Locked<[pthread_t?]>
    private let timingState: Locked<BootTiming>
    private let started = Locked(false)
    private let finishedRunning = Locked(false)
    /// Whether `run` returned with every vCPU thread joined (the machine is paused for good).
    var hasFinishedRunning: Bool { finishedRunning.withLock { $0 } }

    public var timing: BootTiming { timingState.withLock { $0 } }

    public init(configuration: MachineConfiguration, logger: Logger) throws {
        let created = ContinuousClock.now
        timingState = Locked(BootTiming(created: created))
        self.configuration = configuration
        self.logger = logger
        guard configuration.vcpuCount >= 1 else { throw HypervisorError.invalidConfiguration("at least one vCPU is needed") }
        guard configuration.memorySize >= 2 << 20 else { throw HypervisorError.invalidConfiguration("guest RAM must be at least 2 MiB") }

        system = try KVMSystem()
        guard configuration.vcpuCount <= min(system.maximumVCPUs, 254) else {
            throw HypervisorError.invalidConfiguration("\(configuration.vcpuCount) vCPUs exceed this host's limit of \(min(system.maximumVCPUs, 254))")
        }
        virtualMachine = try system.createVirtualMachine()
        try virtualMachine.createPlatformDevices()
        memory = try GuestMemory(size: configuration.memorySize)
        try virtualMachine.mapMemory(memory)
        threadIDs = Locked([pthread_t?](repeating: nil, count: configuration.vcpuCount))

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
        } else {
            pageFaultHandler = nil
        }
        let console = ConsoleMonitor(readyMarker: configuration.readyMarker, forward: configuration.consoleOutput,
                                     onReady: { owner.machine?.markReady() })
        self.console = console
        let eventFDs = configuration.useEventFDs && virtualMachine.supportsEventFDs
        let virtualMachine = virtualMachine
        func interruptLine(_ gsi: UInt32) throws -> any InterruptLine {
            eventFDs ? try EventFDInterruptLine(gsi: gsi, machine: virtualMachine) : IRQChipLine(gsi: gsi, machine: virtualMachine)
        }
        var doorbells: [QueueDoorbell] = []
        // The UART raises its interrupt from the vCPU thread that wrote it: a direct KVM_IRQ_LINE is
        // delivered before that vCPU re-enters, whereas an irqfd on an IOAPIC pin goes through a
        // kernel work item.
        serial = Serial8250(interrupt: IRQChipLine(gsi: Serial8250.com1IRQ, machine: virtualMachine),
                            output: { console.receive($0) })
        var ioBus = Bus()
        try ioBus.insert(serial, at: Serial8250.com1Port, length: Serial8250.windowLength)
        try ioBus.insert(I8042(requestReset: { owner.machine?.stop(.reboot) }), at: I8042.basePort, length: I8042.windowLength)
        try ioBus.insert(SleepControl(requestPowerOff: { owner.machine?.stop(.powerOff(code: 0)) }),
                         at: UInt64(ACPITables.sleepControlPort), length: SleepControl.windowLength)
        try ioBus.insert(PowerOffPort(requestPowerOff: { owner.machine?.stop(.powerOff(code: $0)) }),
                         at: PowerOffPort.port, length: PowerOffPort.windowLength)
        var mmioBus = Bus()
        var blockDevices: [VirtioMMIOTransport] = []
        var commandLine = configuration.commandLine
        var acpiDevices: [ACPITables.MMIODevice] = []
        for (index, disk) in configuration.disks.enumerated() {
            let address = GuestLayout.virtioMMIOBase + UInt64(index) * GuestLayout.virtioMMIOStride
            let gsi = GuestLayout.virtioFirstGSI + UInt32(index)
            let transport = VirtioMMIOTransport(device: VirtioBlock(backend: disk), memory: memory,
                                                interrupt: try interruptLine(gsi), logger: logger)
            try mmioBus.insert(transport, at: address, length: GuestLayout.virtioMMIOStride)
            if eventFDs {
                doorbells += try transport.device.queueMaximumSizes.indices.map {
                    try QueueDoorbell(transport: transport, queueIndex: $0, windowAddress: address, machine: virtualMachine)
                }
            }
            blockDevices.append(transport)
            acpiDevices.append(ACPITables.MMIODevice(address: address, length: GuestLayout.virtioMMIOStride, gsi: gsi))
            // Kernels with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES find the device from this parameter; others
            // from the DSDT (ACPITables). A kernel that sees both logs one failed duplicate probe.
            if case .linux = configuration.image, configuration.announceVirtioOnCommandLine {
                commandLine += " virtio_mmio.device=4K@0x\(String(address, radix: 16)):\(gsi)"
            }
        }
        self.blockDevices = blockDevices
        self.doorbells = doorbells
        dispatcher = ExitDispatcher(ioBus: ioBus, mmioBus: mmioBus)

        let entry = configuration.restore != nil ? nil : try BootLoader.load(configuration.image, commandLine: commandLine, vcpuCount: configuration.vcpuCount,
                                                                             virtioDevices: acpiDevices, into: memory)
        try configuration.restore?.state.platform.apply(to: virtualMachine)
        let supported = try system.supportedCPUID()
        let policy = CPUIDPolicy(vcpuCount: configuration.vcpuCount)
        var vcpus: [VCPU] = []
        for index in 0..<configuration.vcpuCount {
            let vcpu = try virtualMachine.createVCPU(index: index)
            if let restore = configuration.restore {
                try restore.state.vcpus[index].apply(to: vcpu)
                vcpus.append(vcpu)
                continue
            }
            let refused = try VCPUSetup.configure(vcpu, cpuid: policy.entries(from: supported, apicID: index), entry: index == 0 ? entry : nil)
            if !refused.isEmpty, index == 0 {
                logger.debug("host KVM refused boot MSRs", metadata: ["msrs": "\(refused.map { "0x" + String($0, radix: 16) })"])
            }
            vcpus.append(vcpu)
        }
        self.vcpus = vcpus
        owner.machine = self
        if let restore = configuration.restore {
            try restoreDevices(restore.state.devices)
            if !restore.consoleInputOnResume.isEmpty { serial.enqueueInput(restore.consoleInputOnResume) }
        }
        Self.installKickHandler()
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

    /// Runs the guest until it stops or `timeout` passes; returns why it stopped. Call once.
    public func run(timeout: Duration? = nil) -> StopReason {
        let alreadyStarted = started.withLock { value -> Bool in
            defer { value = true }
            return value
        }
        guard !alreadyStarted else { return .failure("a machine can only be run once") }
        doorbells.forEach { $0.start() }
        defer { doorbells.forEach { $0.waitUntilStopped() } }
        for vcpu in vcpus {
            let thread = Thread { [self] in
                Self.unblockKickSignal()
                threadIDs.withLock { $0[vcpu.index] = pthread_self() }
                runLoop(vcpu)
                threadsFinished.signal()
            }
            thread.name = "vcpu\(vcpu.index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
        if let timeout {
            let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            if stopped.wait(timeout: .now() + .nanoseconds(Int(min(nanoseconds, Int64(Int.max))))) == .timedOut {
                stop(.timedOut)
            }
        } else {
            stopped.wait()
        }
        // Join every vCPU thread, kicking until each has left KVM_RUN. The threads hold `self`, so
        // guest memory outlives them even if one is wedged in the kernel past the join limit.
        let joinDeadline = ContinuousClock.now + Self.joinLimit
        for _ in vcpus {
            while threadsFinished.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
                guard ContinuousClock.now < joinDeadline else {
                    logger.error("a vCPU thread did not leave KVM_RUN within \(Self.joinLimit); returning without it")
                    return stopReason.withLock { $0 } ?? .failure("stopped without a reason")
                }
                kickAll()
            }
        }
        finishedRunning.withLock { $0 = true }
        return stopReason.withLock { $0 } ?? .failure("stopped without a reason")
    }

    /// Ends the run with `reason` (the first reason wins). Safe from any thread, including signal-driven ones.
    public func stop(_ reason: StopReason) {
        let first = stopReason.withLock { current -> Bool in
            guard current == nil else { return false }
            current = reason
            return true
        }
        guard first else { return }
        kickAll()
        doorbells.forEach { $0.stop() }
        stopped.signal()
    }

    private func kickAll() {
        let threads = threadIDs.withLock { $0 }
        for (index, vcpu) in vcpus.enumerated() {
            vcpu.requestImmediateExit()
            if let thread = threads[index] { pthread_kill(thread, Machine.kickSignal) }
        }
    }

    /// One line per vCPU with its instruction pointer and mode registers, for a failure report.
    /// Only meaningful after `run` returned (a running vCPU holds its registers).
    public func describeVCPUs() -> String {
        vcpus.map { vcpu in
            guard let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() else { return "vcpu\(vcpu.index): registers unavailable" }
            func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
            return "vcpu\(vcpu.index): rip=\(hex(regs.rip)) rsp=\(hex(regs.rsp)) rflags=\(hex(regs.rflags)) cr0=\(hex(sregs.cr0)) cr3=\(hex(sregs.cr3)) cr4=\(hex(sregs.cr4)) efer=\(hex(sregs.efer)) cs=\(hex(UInt64(sregs.cs.selector)))"
        }.joined(separator: "\n")
    }

    private var isStopping: Bool { stopReason.withLock { $0 != nil } }

    private func markReady() {
        timingState.withLock { if $0.ready == nil { $0.ready = .now } }
        if configuration.pauseAtReady { stop(.stopRequested) }
    }

    private func runLoop(_ vcpu: VCPU) {
        var sawFirstExit = vcpu.index != 0
        while !isStopping {
            let exit: VCPUExit
            do {
                exit = try vcpu.runOnce()
            } catch {
                stop(.failure("vCPU \(vcpu.index): \(error)"))
                return
            }
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
}

/// Lets device callbacks created before `self` is fully initialised reach the machine later.
private final class MachineReference: @unchecked Sendable {
    weak var machine: Machine?
}
