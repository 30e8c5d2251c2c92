import Foundation
import Glibc
import Hypervisor
import Logging

/// `streamvm bench vmm`: the VMM's own costs with the flat test guest.
/// 1. Footprint: `streamvm run` of an idle 256 MiB guest (`mode=spin`) as a child process, its
///    /proc/PID/smaps read once the guest is ready and the VMM has settled, split into guest RAM and
///    the VMM's own memory by mapping — with the startup pages released (the default) and kept
///    (`--keep-startup-pages`), runs alternating in the same bench run.
/// 2. VMM start → first guest exit and → STREAMVM-READY, in this process, over `iterations` boots.
/// 3. virtio-blk 4 KiB random-read IOPS and 64 KiB sequential-read MB/s from a page-cached file.
public struct VMMBenchmark: Sendable {
    public struct Options: Sendable {
        /// The flat test guest (appliances/testguest/build.sh).
        public var guestImage: String
        /// The `streamvm` executable whose `run` is measured (normally this process's own).
        public var executable: String
        public var iterations = 5
        public var randomReads = 2000
        public var sequentialMiB = 64
        public var diskMiB = 64
        public var useEventFDs = true
        /// Child runs per variant (released / kept) for the footprint.
        public var footprintRuns = 3
        public var footprintGuestMiB = 256
        /// Time between the ready marker and reading smaps: start-up has finished and `streamvm run`
        /// has made its second release of startup pages (2 s after the guest started).
        public var settleSeconds = 3.0

        public init(guestImage: String, executable: String) {
            self.guestImage = guestImage
            self.executable = executable
        }
    }

    public typealias Failure = BenchmarkFailure

    public struct Summary: Codable, Sendable {
        public var minimum: Double
        public var median: Double
        public var maximum: Double

        init(_ samples: [Double]) {
            minimum = samples.min() ?? 0
            median = Statistics.median(samples) ?? 0
            maximum = samples.max() ?? 0
        }
    }

    /// The footprint of one variant: every run's VMM-own figure and the run with the median one.
    public struct FootprintVariant: Codable, Sendable {
        public var variant: String
        public var command: String
        public var vmmOwnMiBPerRun: [Double]
        public var median: VMMFootprint
    }

    public struct Report: Codable, Sendable {
        public var host: String
        public var load: String
        public var build: String
        public var iterations: Int
        public var virtioEventFDs: Bool
        public var vmmStartToFirstGuestExitMilliseconds: Summary
        public var vmmStartToReadyMilliseconds: Summary
        public var randomRead4KiBIOPS: Double
        public var sequentialReadMBPerSecond: Double
        public var footprintGuestMiB: Int
        /// "startup pages released" (what `streamvm run` does) and "startup pages kept".
        public var footprint: [FootprintVariant]
        /// Firecracker's published figure (its specification: < 5 MiB VMM memory overhead), not a run here.
        public var firecrackerPublishedMiB: Double
        public var vmmOwnOverFirecracker: Double

        public var table: String {
            var text = "| idle VMM, \(footprintGuestMiB) MiB guest (`streamvm run`, median of \(footprint.first?.vmmOwnMiBPerRun.count ?? 0)) | total RSS | guest RAM | VMM own | executable | libraries | heap | anonymous | other | clean file pages |\n"
            text += "|---|---|---|---|---|---|---|---|---|---|\n"
            for row in footprint {
                let m = row.median
                text += String(format: "| %@ | %.1f | %.1f | **%.1f** | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", row.variant, m.totalMiB, m.guestMemoryMiB, m.vmmOwnMiB,
                               m.executableMiB, m.librariesMiB, m.heapMiB, m.anonymousMiB, m.otherMiB, m.cleanFileMiB)
            }
            text += String(format: "\nVMM own ÷ Firecracker's published %.0f MiB: %.1f×. Start → first guest exit (median of %d): %.2f ms; → READY %.2f ms. IOPS %.0f, sequential %.0f MB/s. Build %@, load %@.\n",
                           firecrackerPublishedMiB, vmmOwnOverFirecracker, iterations, vmmStartToFirstGuestExitMilliseconds.median,
                           vmmStartToReadyMilliseconds.median, randomRead4KiBIOPS, sequentialReadMBPerSecond, build, load)
            return text
        }
    }

    /// Firecracker's specification: "memory overhead … < 5 MiB" for a microVM (SPECIFICATION.md).
    public static let firecrackerPublishedMiB = 5.0

    #if DEBUG
    public static let buildConfiguration = "debug"
    #else
    public static let buildConfiguration = "release"
    #endif

    public let options: Options
    let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    public func run() throws -> Report {
        guard options.iterations >= 1, options.randomReads >= 1, options.sequentialMiB >= 1, options.diskMiB >= 1, options.footprintRuns >= 1 else {
            throw Failure("counts must be positive")
        }
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: options.guestImage)))
        let load = HostFacts.loadAverage()
        let footprint = try footprintVariants(image: image)

        var firstExit: [Double] = []
        var ready: [Double] = []
        for _ in 0..<options.iterations {
            let timing = try boot(image, commandLine: "mode=hello", memoryMiB: 64).timing
            if let exit = timing.firstExit { firstExit.append(Statistics.milliseconds(exit - timing.created)) }
            if let readyAt = timing.ready { ready.append(Statistics.milliseconds(readyAt - timing.created)) }
        }
        let (iops, megabytes) = try blockFigures(image: image)
        let released = footprint.first { $0.variant == Self.releasedVariant }?.median.vmmOwnMiB ?? 0
        return Report(host: Self.hostDescription(), load: load + " → " + HostFacts.loadAverage(), build: Self.buildConfiguration,
                      iterations: options.iterations, virtioEventFDs: options.useEventFDs,
                      vmmStartToFirstGuestExitMilliseconds: Summary(firstExit), vmmStartToReadyMilliseconds: Summary(ready),
                      randomRead4KiBIOPS: iops, sequentialReadMBPerSecond: megabytes, footprintGuestMiB: options.footprintGuestMiB,
                      footprint: footprint, firecrackerPublishedMiB: Self.firecrackerPublishedMiB,
                      vmmOwnOverFirecracker: released / Self.firecrackerPublishedMiB)
    }

    static let releasedVariant = "startup pages released (default)"
    static let keptVariant = "startup pages kept (--keep-startup-pages)"

    private func boot(_ image: [UInt8], commandLine: String, memoryMiB: Int, disks: [any BlockBackend] = []) throws -> Machine {
        var configuration = MachineConfiguration(memorySize: memoryMiB << 20, image: .flat(image), commandLine: commandLine, disks: disks)
        configuration.useEventFDs = options.useEventFDs
        let machine = try Machine(configuration: configuration, logger: logger)
        let reason = machine.run(timeout: .seconds(600))
        guard reason == .powerOff(code: 0) else {
            throw Failure("test guest (\(commandLine)) ended with: \(reason)\n\(machine.console.output)")
        }
        return machine
    }

    /// Runs `streamvm run` on an idle spin-mode appliance, alternating released and kept, and reads
    /// each child's smaps after the ready marker plus the settle time.
    private func footprintVariants(image: [UInt8]) throws -> [FootprintVariant] {
        let directory = NSTemporaryDirectory() + "streamvm-bench-vmm-\(getpid())"
        let appliance = directory + "/appliance-spin"
        try FileManager.default.createDirectory(atPath: appliance, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(image).write(to: URL(fileURLWithPath: appliance + "/kernel"))
        let config = """
            {"name": "testguest-spin", "version": "1", "memoryMiB": \(options.footprintGuestMiB), "vcpus": 1, "kernelFormat": "flat",
             "kernelCommandLine": "mode=spin", "readyMarker": "STREAMVM-READY"}
            """
        try Data(config.utf8).write(to: URL(fileURLWithPath: appliance + "/appliance.json"))
        let executable = URL(fileURLWithPath: options.executable).resolvingSymlinksInPath().path
        var samples: [String: [VMMFootprint]] = [:]
        for round in 0..<options.footprintRuns {
            for keep in [false, true] {
                let arguments = ["run", appliance, "--timeout", "300"] + (keep ? ["--keep-startup-pages"] : [])
                let log = directory + "/run-\(round)-\(keep ? "kept" : "released").log"
                samples[keep ? Self.keptVariant : Self.releasedVariant, default: []].append(try footprintOfRun(executable: executable, arguments: arguments, log: log))
            }
        }
        return [Self.releasedVariant, Self.keptVariant].map { variant in
            let runs = samples[variant] ?? []
            let sorted = runs.sorted { $0.vmmOwnMiB < $1.vmmOwnMiB }
            let command = "streamvm run <idle \(options.footprintGuestMiB) MiB spin appliance>" + (variant == Self.keptVariant ? " --keep-startup-pages" : "")
            return FootprintVariant(variant: variant, command: command, vmmOwnMiBPerRun: runs.map(\.vmmOwnMiB), median: sorted[sorted.count / 2])
        }
    }

    private func footprintOfRun(executable: String, arguments: [String], log: String) throws -> VMMFootprint {
        let child = try SpawnedProcess(executable: executable, arguments: arguments, logPath: log)
        defer { child.stop() }
        let deadline = Date(timeIntervalSinceNow: 120)
        while !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("STREAMVM-READY") {
            guard child.isRunning else { throw Failure("streamvm \(arguments.joined(separator: " ")) ended before the guest was ready: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
            guard Date() < deadline else { throw Failure("the idle guest printed no STREAMVM-READY within 120 s (log \(log))") }
            usleep(10_000)
        }
        usleep(UInt32(options.settleSeconds * 1_000_000))
        let map = try ProcessMemoryMap.read(process: String(child.pid))
        guard child.isRunning else { throw Failure("streamvm \(arguments.joined(separator: " ")) ended while being measured") }
        return VMMFootprint(map, executable: executable)
    }

    private func blockFigures(image: [UInt8]) throws -> (iops: Double, megabytesPerSecond: Double) {
        let diskPath = NSTemporaryDirectory() + "streamvm-bench-\(getpid()).img"
        defer { try? FileManager.default.removeItem(atPath: diskPath) }
        let mebibyte = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        guard FileManager.default.createFile(atPath: diskPath, contents: nil), let file = FileHandle(forWritingAtPath: diskPath) else {
            throw Failure("cannot create \(diskPath)")
        }
        for _ in 0..<options.diskMiB { try file.write(contentsOf: mebibyte) }
        try file.close()
        let disk = try RawFileBackend(path: diskPath, readOnly: true)
        let machine = try boot(image, commandLine: "mode=blkbench count=\(options.randomReads) seqmib=\(options.sequentialMiB)", memoryMiB: 64, disks: [disk])
        let marks = machine.console.benchmarkMarks
        func seconds(_ name: String) throws -> Double {
            guard let start = marks["BENCH-\(name)-START"], let end = marks["BENCH-\(name)-END"] else {
                throw Failure("test guest printed no BENCH-\(name) marks")
            }
            return Statistics.milliseconds(end - start) / 1000
        }
        return (Double(options.randomReads) / (try seconds("RANDOM")), Double(options.sequentialMiB) * 1.048576 / (try seconds("SEQUENTIAL")))
    }

    /// Kernel release and whether /proc/cpuinfo says we are ourselves a guest (as on a PVM host).
    static func hostDescription() -> String {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let nested = cpuinfo.contains(" hypervisor") ? ", host itself virtualized (nested KVM)" : ""
        return "Linux \(release)\(nested)"
    }
}
