import Benchmarks
import ArgumentParser
import Foundation
import Glibc
import Hypervisor
import Logging

/// Boots the flat test guest repeatedly and reports, as JSON: VMM start → first guest exit, VMM
/// start → STREAMVM-READY, virtio-blk 4 KiB random-read IOPS and 64 KiB sequential-read MB/s from a
/// page-cached file, and the VMM's resident memory while an idle 256 MiB guest runs.
struct BenchVMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vmm", abstract: "Benchmark the KVM VMM with the flat test guest.")

    @Option(help: "Flat test guest image (build it with appliances/testguest/build.sh).")
    var guest = ".build-appliances/testguest/testguest.bin"

    @Option(help: "Boots to time.")
    var iterations = 5

    @Option(help: "Random 4 KiB reads in the IOPS phase.")
    var randomReads = 2000

    @Option(name: .customLong("sequential-mib"), help: "MiB read sequentially (64 KiB requests).")
    var sequentialMiB = 64

    @Option(name: .customLong("disk-mib"), help: "Size of the scratch disk in MiB.")
    var diskMiB = 64

    @Flag(name: .customLong("no-eventfds"), help: "Serve virtio notifications on the vCPU thread (no ioeventfd/irqfd), for comparison.")
    var noEventFDs = false

    struct Summary: Encodable {
        var minimum: Double
        var median: Double
        var maximum: Double

        init(_ samples: [Double]) {
            let sorted = samples.sorted()
            minimum = sorted.first ?? 0
            median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
            maximum = sorted.last ?? 0
        }
    }

    struct Report: Encodable {
        var host: String
        var build: String
        var iterations: Int
        var virtioEventFDs: Bool
        var vmmStartToFirstGuestExitMilliseconds: Summary
        var vmmStartToReadyMilliseconds: Summary
        var randomRead4KiBIOPS: Double
        var sequentialReadMBPerSecond: Double
        var vmmResidentMiBWith256MiBGuest: Double
    }

    func run() throws {
        guard iterations >= 1, randomReads >= 1, sequentialMiB >= 1, diskMiB >= 1 else { throw ValidationError("counts must be positive") }
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: guest)))
        var logger = Logger(label: "streamvm.bench")
        logger.logLevel = .warning
        func milliseconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        }
        func boot(_ commandLine: String, memoryMiB: Int, disks: [any BlockBackend] = []) throws -> Machine {
            var configuration = MachineConfiguration(memorySize: memoryMiB << 20, image: .flat(image), commandLine: commandLine, disks: disks)
            configuration.useEventFDs = !noEventFDs
            let machine = try Machine(configuration: configuration, logger: logger)
            let reason = machine.run(timeout: .seconds(600))
            guard reason == .powerOff(code: 0) else {
                throw ValidationError("test guest (\(commandLine)) ended with: \(reason)\n\(machine.console.output)")
            }
            return machine
        }

        // Measured first, before benchmark buffers grow the heap. RSS while a 256 MiB guest is up (spinning after READY): what the VMM costs beyond touched guest pages.
        let idle = try Machine(configuration: MachineConfiguration(memorySize: 256 << 20, image: .flat(image), commandLine: "mode=spin"),
                               logger: logger)
        let resident = Locked(0.0)
        Thread.detachNewThread {
            while !idle.console.isReady { usleep(1000) }
            resident.withLock { $0 = Self.residentMiB() }
            idle.stop(.stopRequested)
        }
        _ = idle.run(timeout: .seconds(600))

        var firstExit: [Double] = []
        var ready: [Double] = []
        for _ in 0..<iterations {
            let timing = try boot("mode=hello", memoryMiB: 64).timing
            if let exit = timing.firstExit { firstExit.append(milliseconds(exit - timing.created)) }
            if let readyAt = timing.ready { ready.append(milliseconds(readyAt - timing.created)) }
        }

        let diskPath = NSTemporaryDirectory() + "streamvm-bench-\(getpid()).img"
        defer { try? FileManager.default.removeItem(atPath: diskPath) }
        let mebibyte = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        guard FileManager.default.createFile(atPath: diskPath, contents: nil), let file = FileHandle(forWritingAtPath: diskPath) else {
            throw ValidationError("cannot create \(diskPath)")
        }
        for _ in 0..<diskMiB { try file.write(contentsOf: mebibyte) }
        try file.close()
        let disk = try RawFileBackend(path: diskPath, readOnly: true)
        let machine = try boot("mode=blkbench count=\(randomReads) seqmib=\(sequentialMiB)", memoryMiB: 64, disks: [disk])
        let marks = machine.console.benchmarkMarks
        func phase(_ name: String) throws -> Double {
            guard let start = marks["BENCH-\(name)-START"], let end = marks["BENCH-\(name)-END"] else {
                throw ValidationError("test guest printed no BENCH-\(name) marks")
            }
            return milliseconds(end - start) / 1000
        }
        let randomSeconds = try phase("RANDOM")
        let sequentialSeconds = try phase("SEQUENTIAL")

        let report = Report(
            host: Self.hostDescription(),
            build: Self.buildConfiguration,
            iterations: iterations,
            virtioEventFDs: !noEventFDs,
            vmmStartToFirstGuestExitMilliseconds: Summary(firstExit),
            vmmStartToReadyMilliseconds: Summary(ready),
            randomRead4KiBIOPS: Double(randomReads) / randomSeconds,
            sequentialReadMBPerSecond: Double(sequentialMiB) * 1.048576 / sequentialSeconds,
            vmmResidentMiBWith256MiBGuest: resident.withLock { $0 })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }

    #if DEBUG
    static let buildConfiguration = "debug"
    #else
    static let buildConfiguration = "release"
    #endif

    /// Kernel release and whether /proc/cpuinfo says we are ourselves a guest (as on a PVM host).
    static func hostDescription() -> String {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let nested = cpuinfo.contains(" hypervisor") ? ", host itself virtualized (nested KVM)" : ""
        return "Linux \(release)\(nested)"
    }

    /// Current resident set size of this process (VmRSS).
    static func residentMiB() -> Double {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kibibytes = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
            return kibibytes / 1024
        }
        return 0
    }
}
