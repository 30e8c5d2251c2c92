import ArgumentParser
import Catalog
import ControlAPI
import Dedup
import Dispatch
import Foundation
import Glibc
import HostNetwork
import Hypervisor
import Logging

/// `streamvm run <appliance-dir>`: boots a local appliance directory on KVM with its console on this
/// terminal. Each way a run ends has its own exit status and a one-line reason on stderr.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Boot a local appliance directory (appliance.json, kernel, initrd, disk.img) on KVM.",
        discussion: """
            Exit status: 0 guest powered off cleanly, 3 guest powered off with a non-zero code, \
            4 guest rebooted, 5 triple fault, 6 guest halted, 124 time limit, 130 interrupted (Ctrl-C), \
            1 VMM failure or invalid appliance.
            """)

    /// Exit statuses, one per way a run can end.
    enum Status {
        static let poweredOff: Int32 = 0
        static let failure: Int32 = 1
        static let poweredOffWithError: Int32 = 3
        static let rebooted: Int32 = 4
        static let tripleFault: Int32 = 5
        static let halted: Int32 = 6
        /// As timeout(1).
        static let timedOut: Int32 = 124
        /// 128 + SIGINT, the shell convention for "ended by Ctrl-C".
        static let interrupted: Int32 = 130
    }

    @Argument(help: "Appliance directory holding appliance.json and its artifacts.")
    var appliance: String

    @Option(help: "Guest RAM in MiB (default: the appliance's memoryMiB).")
    var memory: Int?

    @Option(help: "Number of vCPUs (default: the appliance's vcpus).")
    var vcpus: Int?

    @Option(help: "Copy-on-write overlay file for disk.img (its block map is <file>.map); the appliance's disk is then never modified.")
    var diskOverlay: String?

    @Option(help: "Stop the guest after this many seconds.")
    var timeout: Double?

    @Flag(help: "Log VMM diagnostics to stderr.")
    var verbose = false

    @Flag(help: "Boot even when the appliance has a snapshot (memory.img + vmstate.json).")
    var cold = false

    @Flag(help: "When resuming a snapshot, read all of memory.img before the guest runs (default: lazily, on first touch).")
    var eager = false

    @Option(help: "Serve the control API (pause, resume, snapshot, metrics) on this Unix socket, mode 0600 (docs/CONTROL-API.md).")
    var apiSocket: String?

    @Option(help: "Memory dedup of the running guest (docs/dedup.md): off, share (zero and identical cold pages) or full (also patches similar cold pages and compresses colder ones). Fresh boots only, not snapshot resumes. Default off: see docs/dedup.md for why.")
    var dedup: DedupMode = .off

    @OptionGroup var registration: RegistrationOptions

    @OptionGroup var dilation: DilationOption

    @OptionGroup var configFile: ConfigFileOption

    @Flag(help: "Keep the pages of the binary and libraries touched only while starting, and freed heap, resident (by default they are given back once the guest runs: docs/hypervisor.md, \"VMM footprint\").")
    var keepStartupPages = false

    func run() throws {
        let config = try ApplianceConfig.load(directory: appliance)
        let memoryMiB = memory ?? config.memoryMiB
        let vcpuCount = vcpus ?? config.vcpus
        guard (2...ApplianceConfig.maximumMemoryMiB).contains(memoryMiB) else { throw ValidationError("--memory must be 2...\(ApplianceConfig.maximumMemoryMiB) MiB") }
        guard (1...ApplianceConfig.maximumVCPUs).contains(vcpuCount) else { throw ValidationError("--vcpus must be 1...\(ApplianceConfig.maximumVCPUs)") }

        var logger = Logger(label: "streamvm.run")
        logger.logLevel = verbose ? .debug : .warning
        let terminal = TerminalMode.enterCharacterMode()
        defer { terminal?.restore() }
        let engine = dedup == .off ? nil : try DedupEngine(configuration: DedupConfiguration(mode: dedup))
        let dilationSetup = try dilation.prepare()
        defer { dilationSetup?.finish() }
        let machine = try makeMachine(config: config, memoryMiB: memoryMiB, vcpuCount: vcpuCount, engine: engine,
                                      dilationSetup: dilationSetup, logger: logger)
        defer {
            engine?.stop()
            engine?.detach(machine)
        }

        // Ctrl-C / SIGTERM stop the guest; the run then returns normally so the terminal is restored.
        let signalQueue = DispatchQueue(label: "streamvm.run.signals")
        let sources = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: signalQueue)
            source.setEventHandler { machine.stop(.stopRequested) }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        if terminal != nil { ConsoleInput.start(feeding: machine.serial) }

        let host = try registration.plan(apiSocket: apiSocket, appliance: config.name, config: try configFile.load().file)
        let info = InstanceInfo(id: host?.name ?? config.name, appliance: config.name, applianceVersion: config.version, memoryMiB: memoryMiB)
        let reason = try ControlSocket.serving(at: host?.socket, machine: machine, info: info,
                                               extraMetrics: { engine.map { DedupMetrics.samples($0.statistics) } ?? [] },
                                               logger: logger) { () -> StopReason in
            try host?.register(appliance: config.name, version: config.version, command: "run")
            defer { host?.unregister() }
            do {
                try machine.start()
            } catch {
                return .failure("\(error)")
            }
            engine?.start()
            if !keepStartupPages {
                // Once when the guest starts (the VMM's own start-up), and once more after the
                // guest's first seconds (code run only while it boots: first exits, console set-up).
                let releaseLogger = logger
                Self.releaseStartupPages(when: "start", logger: releaseLogger)
                DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + Self.secondStartupPageRelease) {
                    Self.releaseStartupPages(when: "boot", logger: releaseLogger)
                }
            }
            return machine.waitUntilStopped(timeout: timeout.map { .milliseconds(Int($0 * 1000)) })
        }
        terminal?.restore()
        FileHandle.standardError.write(Data("\nstreamvm: \(reason)\n".utf8))
        throw ExitCode(Self.status(for: reason))
    }

    /// When the second release of startup pages runs, after the guest started.
    static let secondStartupPageRelease: DispatchTimeInterval = .seconds(2)

    static func releaseStartupPages(when: String, logger: Logger) {
        do {
            let summary = try StartupPageRelease.release()
            logger.debug("startup pages released", metadata: ["at": "\(when)", "mappings": "\(summary.mappingsReleased)", "fileKiB": "\(summary.fileBytesReleased >> 10)",
                                                              "residentKiB": "\(summary.residentBefore >> 10) -> \(summary.residentAfter >> 10)"])
        } catch {
            logger.warning("startup pages kept: \(error)")
        }
    }

    /// Reads the kernel (and initrd) and creates the machine. The files' bytes live only in this
    /// function: once the machine has copied them into guest RAM nothing holds them (the machine
    /// keeps no boot image either), so they do not stay in the VMM's memory for the whole run.
    func makeMachine(config: ApplianceConfig, memoryMiB: Int, vcpuCount: Int, engine: DedupEngine? = nil,
                     dilationSetup: DilationSetup?, logger: Logger) throws -> Machine {
        let directory = URL(fileURLWithPath: appliance)
        func artifact(_ role: ArtifactRole) -> String? {
            let path = directory.appendingPathComponent(role.fileName).path
            return FileManager.default.fileExists(atPath: path) ? path : nil
        }
        guard let kernelPath = artifact(.kernel) else { throw ValidationError("\(appliance) has no kernel") }
        var disks: [any BlockBackend] = []
        if let diskPath = artifact(.disk) {
            if let diskOverlay {
                disks.append(try CopyOnWriteOverlay(base: try RawFileBackend(path: diskPath, readOnly: true), overlayPath: diskOverlay))
            } else {
                disks.append(try RawFileBackend(path: diskPath, readOnly: false))
            }
        }
        // Resume from the appliance's snapshot when it has one (memory is then loaded lazily); a
        // restore needs no kernel bytes at all.
        let restore = cold || artifact(.state) == nil ? nil : try RestorePlan.load(directory: appliance, loading: eager ? .eager : .lazy)
        var image: BootImage?
        if restore == nil {
            let kernel = Array(try Data(contentsOf: URL(fileURLWithPath: kernelPath)))
            if config.kernelFormat == .flat {
                image = .flat(kernel)
            } else {
                image = .linux(kernel: kernel, initrd: try artifact(.initrd).map { Array(try Data(contentsOf: URL(fileURLWithPath: $0))) })
            }
        }
        var configuration = MachineConfiguration(
            memorySize: memoryMiB << 20, vcpuCount: vcpuCount, image: image,
            commandLine: ApplianceNetwork.commandLine(config.kernelCommandLine ?? "", interfaces: config.interfaces),
            disks: disks, readyMarker: config.readyMarker,
            consoleOutput: { byte in ConsoleOutput.write(byte) }, restore: restore)
        // The appliance's interfaces (appliance.json), in order: a resume restores their state.
        configuration.devices = try ApplianceNetwork.devices(for: config, file: directory.appendingPathComponent(ApplianceConfig.fileName).path,
                                                             backends: HostNetworkBackends(logger: logger))
        try DilationSetup.apply(dilationSetup, to: &configuration)
        guard let engine else { return try Machine(configuration: configuration, logger: logger) }
        // The engine's store is the page source: it needs a fresh boot (a resume has its own).
        guard restore == nil else { throw ValidationError("--dedup needs a fresh boot: use --cold to ignore the appliance's snapshot, or --dedup off") }
        let store = try engine.makeStore(memorySize: memoryMiB << 20)
        configuration.pageSource = store
        let machine = try Machine(configuration: configuration, logger: logger)
        try engine.attach(machine, store: store)
        return machine
    }

    static func status(for reason: StopReason) -> Int32 {
        switch reason {
        case .powerOff(code: 0): return Status.poweredOff
        case .powerOff: return Status.poweredOffWithError
        case .reboot: return Status.rebooted
        case .tripleFault: return Status.tripleFault
        case .halted: return Status.halted
        case .timedOut: return Status.timedOut
        case .stopRequested: return Status.interrupted
        case .failure: return Status.failure
        }
    }
}

/// Writes guest console bytes straight to stdout, unbuffered, so interactive output appears at once.
enum ConsoleOutput {
    static func write(_ byte: UInt8) {
        var value = byte
        _ = Glibc.write(STDOUT_FILENO, &value, 1)
    }
}

/// Feeds terminal keystrokes to the guest's serial port from a dedicated thread.
enum ConsoleInput {
    static func start(feeding serial: Serial8250) {
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 256)
            while true {
                let count = read(STDIN_FILENO, &buffer, buffer.count)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { return }
                serial.enqueueInput(Array(buffer[0..<count]))
            }
        }
    }
}

/// Character-at-a-time terminal input without local echo, so the guest's shell does the echoing.
/// ISIG stays on: Ctrl-C reaches the VMM as SIGINT and ends the run.
final class TerminalMode {
    private var original: termios
    private var restored = false

    private init(original: termios) {
        self.original = original
    }

    static func enterCharacterMode() -> TerminalMode? {
        guard isatty(STDIN_FILENO) == 1 else { return nil }
        var settings = termios()
        guard tcgetattr(STDIN_FILENO, &settings) == 0 else { return nil }
        let mode = TerminalMode(original: settings)
        settings.c_lflag &= ~tcflag_t(ICANON | ECHO)
        tcsetattr(STDIN_FILENO, TCSANOW, &settings)
        return mode
    }

    func restore() {
        guard !restored else { return }
        restored = true
        tcsetattr(STDIN_FILENO, TCSANOW, &original)
    }
}
