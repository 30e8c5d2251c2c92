import Benchmarks
import ArgumentParser
import Foundation
import Glibc
import Hypervisor
import Logging

/// `streamvm bench uffd`: lazy guest memory figures, as JSON plus a Markdown table.
/// 1. Fault service p50/p99 of the Swift userfaultfd handler from an in-memory source, beside a
///    minimal C handler (benchmarks/uffd/baseline.c, compiled here with gcc) in the same run,
///    blocking and busy-polling, rounds interleaved so both see the same machine load.
/// 2. Restoring the snapshot test guest: restore → first guest exit, restore → ready-equivalent
///    (the guest re-read its memory and printed the marker again), lazily and with all memory read
///    first, and the pages touched after resume as a share of guest memory.
struct BenchUffdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "uffd", abstract: "Benchmark lazy guest memory (userfaultfd) and snapshot restore.")

    @Option(help: "Flat test guest image (build it with appliances/testguest/build.sh).")
    var guest = ".build-appliances/testguest/testguest.bin"

    @Option(help: "C baseline handler source.")
    var baselineSource = "benchmarks/uffd/baseline.c"

    @Option(help: "Pages faulted per latency round.")
    var pages = 4096

    @Option(help: "Latency rounds per handler and mode.")
    var rounds = 5

    @Option(help: "Restores timed per loading mode.")
    var restores = 3

    @Option(name: .customLong("guest-mib"), help: "Guest RAM of the restore benchmark, MiB.")
    var guestMiB = 256

    @Option(name: .customLong("touch-mib"), help: "MiB the guest writes before the snapshot and re-reads after resume.")
    var touchMiB = 16

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    @Option(help: "Instead: restore this appliance's snapshot (from `streamvm snapshot --at-ready`) lazily, lazily with the pages the last lazy restore touched before ready mapped first (working set), and eagerly, --restores times each, and report only those figures. It must resume, print its ready marker again, finish its session (STREAMVM-DONE status=0) and power off.")
    var appliance: String?

    @Option(help: "With --appliance: how the fault handler waits for faults, blocking or busyPolling.")
    var waitMode: PageFaultHandler.WaitMode = .blocking

    struct Latency: Codable {
        var p50Nanoseconds: Double
        var p99Nanoseconds: Double
    }

    struct HandlerComparison: Codable {
        var mode: String
        var swift: Latency
        var c: Latency
        var swiftOverCP50: Double
    }

    struct RestoreFigures: Codable {
        var loading: String
        var restoreToFirstGuestExitMilliseconds: Double
        var restoreToReadyMilliseconds: Double
        var pagesTouchedAfterResume: Int
        var guestPages: Int
        var touchedShare: Double
    }

    struct Report: Codable {
        var host: String
        var load: String
        var pagesPerRound: Int
        var rounds: Int
        var faultService: [HandlerComparison]
        var guestMiB: Int
        var touchMiB: Int
        var restore: [RestoreFigures]
    }

    /// Restore figures of a published appliance's snapshot (`--appliance`).
    struct ApplianceRestoreFigures: Codable {
        var loading: String
        var restores: Int
        /// Medians over the restores, from `Machine.init` (the restore starts) on.
        var restoreToFirstGuestExitMilliseconds: Double
        var restoreToReadyMilliseconds: Double
        var restoreToSessionDoneMilliseconds: Double
        /// Pages first touched from the resume until the ready marker, and until the run ended
        /// (lazy only: an eager restore maps every page before the guest runs).
        var pagesTouchedByReady: Int
        var pagesTouchedBySessionEnd: Int
        var guestPages: Int
        var allRestoreMilliseconds: [[Double]]
        var waitMode: String
    }

    struct ApplianceReport: Codable {
        var host: String
        var load: String
        var appliance: String
        var memoryMiB: Int
        var restore: [ApplianceRestoreFigures]
    }

    func run() throws {
        if let appliance { return try runAppliance(appliance) }
        guard pages >= 100, rounds >= 1, restores >= 1, guestMiB >= 32, touchMiB >= 1, touchMiB + 8 <= guestMiB else {
            throw ValidationError("need --pages ≥ 100, positive counts, and --touch-mib + 8 ≤ --guest-mib")
        }
        let baseline = try compileBaseline()
        var comparisons: [HandlerComparison] = []
        for (mode, cMode) in [(PageFaultHandler.WaitMode.blocking, "blocking"), (.busyPolling, "busy")] {
            var swiftRuns: [Latency] = []
            var cRuns: [Latency] = []
            for _ in 0..<rounds {
                cRuns.append(try runBaseline(baseline, mode: cMode))
                let samples = try FaultLatencyProbe.measure(pages: pages, waitMode: mode).sorted()
                swiftRuns.append(Latency(p50Nanoseconds: Double(samples[samples.count / 2]), p99Nanoseconds: Double(samples[samples.count * 99 / 100])))
            }
            let swift = Self.median(swiftRuns)
            let c = Self.median(cRuns)
            comparisons.append(HandlerComparison(mode: mode.rawValue, swift: swift, c: c, swiftOverCP50: swift.p50Nanoseconds / c.p50Nanoseconds))
        }

        let restore = try restoreFigures()
        let report = Report(host: Self.hostName(), load: Self.loadAverage(), pagesPerRound: pages, rounds: rounds,
                            faultService: comparisons, guestMiB: guestMiB, touchMiB: touchMiB, restore: restore)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(report)
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json), options: .atomic) }
        print("\n| handler (\(pages) pages × \(rounds) rounds, median of rounds) | Swift p50 / p99 µs | C p50 / p99 µs | Swift/C p50 |")
        print("|---|---|---|---|")
        for row in comparisons {
            print(String(format: "| %@ | %.1f / %.1f | %.1f / %.1f | %.2f× |", row.mode, row.swift.p50Nanoseconds / 1000, row.swift.p99Nanoseconds / 1000,
                         row.c.p50Nanoseconds / 1000, row.c.p99Nanoseconds / 1000, row.swiftOverCP50))
        }
        print("\n| restore (\(guestMiB) MiB guest, \(touchMiB) MiB re-read) | → first guest exit ms | → ready ms | pages touched after resume |")
        print("|---|---|---|---|")
        for row in restore {
            print(String(format: "| %@ | %.1f | %.1f | %d of %d (%.1f%%) |", row.loading, row.restoreToFirstGuestExitMilliseconds,
                         row.restoreToReadyMilliseconds, row.pagesTouchedAfterResume, row.guestPages, row.touchedShare * 100))
        }
    }

    static func median(_ runs: [Latency]) -> Latency {
        let p50 = runs.map(\.p50Nanoseconds).sorted()
        let p99 = runs.map(\.p99Nanoseconds).sorted()
        return Latency(p50Nanoseconds: p50[p50.count / 2], p99Nanoseconds: p99[p99.count / 2])
    }

    private func compileBaseline() throws -> String {
        guard FileManager.default.fileExists(atPath: baselineSource) else {
            throw ValidationError("\(baselineSource) not found: run from the repository root or pass --baseline-source")
        }
        let output = NSTemporaryDirectory() + "streamvm-uffd-baseline-\(getpid())"
        let status = try Self.execute("/usr/bin/gcc", ["-O2", "-pthread", "-o", output, baselineSource]).status
        guard status == 0 else { throw ValidationError("gcc could not build \(baselineSource) (status \(status))") }
        return output
    }

    private func runBaseline(_ binary: String, mode: String) throws -> Latency {
        let (status, output) = try Self.execute(binary, [String(pages), mode])
        guard status == 0 else { throw ValidationError("C baseline failed (status \(status)): \(output)") }
        return try JSONDecoder().decode(Latency.self, from: Data(output.utf8))
    }

    static func execute(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    private func restoreFigures() throws -> [RestoreFigures] {
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: guest)))
        let directory = NSTemporaryDirectory() + "streamvm-bench-uffd-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "streamvm.bench.uffd")
        logger.logLevel = .warning
        let commandLine = "mode=snapshot mib=\(touchMiB)"
        let snapshotting = try Machine(configuration: MachineConfiguration(memorySize: guestMiB << 20, image: .flat(image), commandLine: commandLine,
                                                                           pauseAtReady: true), logger: logger)
        guard snapshotting.run(timeout: .seconds(300)) == .stopRequested else { throw ValidationError("test guest did not reach ready: \(snapshotting.console.output)") }
        try snapshotting.saveSnapshot(to: directory)

        func milliseconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        }
        var figures: [RestoreFigures] = []
        for loading in [RestorePlan.MemoryLoading.lazy, .eager] {
            var first: [Double] = []
            var ready: [Double] = []
            var touched = 0
            var guestPages = 0
            for _ in 0..<restores {
                let plan = try RestorePlan.load(directory: directory, loading: loading)
                let machine = try Machine(configuration: MachineConfiguration(memorySize: guestMiB << 20, image: .flat([]), restore: plan), logger: logger)
                let reason = machine.run(timeout: .seconds(300))
                guard reason == .powerOff(code: 0), machine.console.output.contains("bad pages 0x0000000000000000") else {
                    throw ValidationError("restored guest failed (\(reason)): \(machine.console.output)")
                }
                let timing = machine.timing
                guard let firstExit = timing.firstExit, let readyAt = timing.ready else { throw ValidationError("restored guest gave no timing marks") }
                first.append(milliseconds(firstExit - timing.created))
                ready.append(milliseconds(readyAt - timing.created))
                touched = machine.pageFaultHandler?.faultLog.count ?? 0
                guestPages = machine.pageFaultHandler?.pageCount ?? 0
            }
            first.sort()
            ready.sort()
            figures.append(RestoreFigures(loading: loading.rawValue, restoreToFirstGuestExitMilliseconds: first[first.count / 2],
                                          restoreToReadyMilliseconds: ready[ready.count / 2], pagesTouchedAfterResume: touched,
                                          guestPages: guestPages, touchedShare: guestPages == 0 ? 0 : Double(touched) / Double(guestPages)))
        }
        return figures
    }

    private func runAppliance(_ directory: String) throws {
        guard restores >= 1 else { throw ValidationError("--restores must be positive") }
        let mode = waitMode
        let setup = try ApplianceSetup(directory: directory)
        var logger = Logger(label: "streamvm.bench.uffd")
        logger.logLevel = .warning
        func milliseconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        var figures: [ApplianceRestoreFigures] = []
        // "lazy+working-set": lazy, with the pages the last plain lazy restore touched before it
        // was ready mapped first (REAP's recorded working set); run after "lazy", which records it.
        var workingSet: [Int] = []
        for (label, loading) in [("lazy", RestorePlan.MemoryLoading.lazy), ("lazy+working-set", .lazy), ("eager", .eager)] {
            var runs: [[Double]] = []
            var touchedByReady = 0
            var touchedByEnd = 0
            var guestPages = 0
            for index in 0..<restores {
                var plan = try RestorePlan.load(directory: directory, loading: loading)
                plan.waitMode = mode
                if label == "lazy+working-set" { plan.prefetchPages = workingSet }
                let machine = try Machine(configuration: setup.machineConfiguration(restore: plan), logger: logger)
                let reason = machine.run(timeout: .seconds(1800))
                let ended = ContinuousClock.now
                let output = machine.console.output
                guard reason == .powerOff(code: 0), output.contains("STREAMVM-DONE status=0") else {
                    throw ValidationError("\(loading.rawValue) restore \(index + 1) of \(directory) failed (\(reason)) [\(label)]; console:\n\(output.suffix(3000))")
                }
                let timing = machine.timing
                guard let firstExit = timing.firstExit, let ready = timing.ready else {
                    throw ValidationError("\(loading.rawValue) restore \(index + 1): no first exit or no ready marker after resuming")
                }
                let readyOffset = ready - timing.created
                runs.append([milliseconds(firstExit - timing.created), milliseconds(readyOffset), milliseconds(ended - timing.created)])
                let log = machine.pageFaultHandler?.faultLog ?? []
                // Log times count from the handler's start, a few ms after `created`: a slight overcount at most.
                let readyNanoseconds = UInt64(max(0, milliseconds(readyOffset) * 1e6))
                let beforeReady = log.filter { $0.nanoseconds <= readyNanoseconds }
                if label == "lazy" { workingSet = beforeReady.map(\.page) }
                touchedByReady = loading == .lazy ? beforeReady.count : 0
                touchedByEnd = loading == .lazy ? log.count : 0
                guestPages = machine.pageFaultHandler?.pageCount ?? 0
                FileHandle.standardError.write(Data(String(format: "bench uffd: %@ restore %d: first exit %.1f ms, ready %.1f ms, done %.1f ms, pages touched by ready %d, by end %d of %d\n",
                                                           label, index + 1, runs.last![0], runs.last![1], runs.last![2], touchedByReady, touchedByEnd, guestPages).utf8))
            }
            figures.append(ApplianceRestoreFigures(loading: label, restores: restores,
                                                   restoreToFirstGuestExitMilliseconds: median(runs.map { $0[0] }),
                                                   restoreToReadyMilliseconds: median(runs.map { $0[1] }),
                                                   restoreToSessionDoneMilliseconds: median(runs.map { $0[2] }),
                                                   pagesTouchedByReady: touchedByReady, pagesTouchedBySessionEnd: touchedByEnd,
                                                   guestPages: guestPages, allRestoreMilliseconds: runs, waitMode: mode.rawValue))
        }
        let report = ApplianceReport(host: Self.hostName(), load: Self.loadAverage(), appliance: setup.config.name,
                                     memoryMiB: setup.config.memoryMiB, restore: figures)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(report)
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json), options: .atomic) }
        print("\n| restore of \(setup.config.name) (\(setup.config.memoryMiB) MiB, \(mode.rawValue) handler, median of \(restores)) | → first guest exit ms | → ready ms | → session done ms | pages touched by ready / by end |")
        print("|---|---|---|---|---|")
        for row in figures {
            let share = { (pages: Int) in row.guestPages == 0 ? 0 : Double(pages) * 100 / Double(row.guestPages) }
            print(String(format: "| %@ | %.1f | %.1f | %.1f | %d (%.1f%%) / %d (%.1f%%) of %d |", row.loading, row.restoreToFirstGuestExitMilliseconds,
                         row.restoreToReadyMilliseconds, row.restoreToSessionDoneMilliseconds, row.pagesTouchedByReady, share(row.pagesTouchedByReady),
                         row.pagesTouchedBySessionEnd, share(row.pagesTouchedBySessionEnd), row.guestPages))
        }
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        return String(cString: buffer)
    }

    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "unknown"
    }
}
