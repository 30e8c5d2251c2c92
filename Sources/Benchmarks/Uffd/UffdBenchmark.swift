import Foundation
import Glibc
import Hypervisor
import Logging

/// `streamvm bench uffd`: lazy guest memory figures.
/// 1. Fault service p50/p99 of the Swift userfaultfd handler from an in-memory source, beside a
///    minimal C handler (benchmarks/uffd/baseline.c, compiled here with gcc) in the same run,
///    blocking and busy-polling, rounds interleaved so both see the same machine load.
/// 2. Restoring the snapshot test guest: restore → first guest exit, restore → ready-equivalent
///    (the guest re-read its memory and printed the marker again), lazily and with all memory read
///    first, and the pages touched after resume as a share of guest memory.
/// 3. (`applianceRestores`) a published appliance's snapshot restored lazily, lazily with its
///    recorded working set mapped first, and eagerly.
public struct UffdBenchmark: Sendable {
    public struct Options: Sendable {
        public var guestImage: String
        public var baselineSource: String
        public var pages: Int
        public var rounds: Int
        public var restores: Int
        public var guestMiB: Int
        public var touchMiB: Int

        public init(guestImage: String, baselineSource: String, pages: Int, rounds: Int, restores: Int, guestMiB: Int, touchMiB: Int) {
            self.guestImage = guestImage
            self.baselineSource = baselineSource
            self.pages = pages
            self.rounds = rounds
            self.restores = restores
            self.guestMiB = guestMiB
            self.touchMiB = touchMiB
        }
    }

    public typealias Failure = BenchmarkFailure

    public struct Latency: Codable, Sendable {
        public var p50Nanoseconds: Double
        public var p99Nanoseconds: Double
    }

    public struct HandlerComparison: Codable, Sendable {
        public var mode: String
        public var swift: Latency
        public var c: Latency
        public var swiftOverCP50: Double
    }

    public struct RestoreFigures: Codable, Sendable {
        public var loading: String
        public var restoreToFirstGuestExitMilliseconds: Double
        public var restoreToReadyMilliseconds: Double
        public var pagesTouchedAfterResume: Int
        public var guestPages: Int
        public var touchedShare: Double
    }

    public struct Report: Codable, Sendable {
        public var host: String
        public var load: String
        public var pagesPerRound: Int
        public var rounds: Int
        public var faultService: [HandlerComparison]
        public var guestMiB: Int
        public var touchMiB: Int
        public var restore: [RestoreFigures]

        /// Markdown tables of the report.
        public var table: String {
            var text = "| handler (\(pagesPerRound) pages × \(rounds) rounds, median of rounds) | Swift p50 / p99 µs | C p50 / p99 µs | Swift/C p50 |\n|---|---|---|---|\n"
            for row in faultService {
                text += String(format: "| %@ | %.1f / %.1f | %.1f / %.1f | %.2f× |\n", row.mode, row.swift.p50Nanoseconds / 1000, row.swift.p99Nanoseconds / 1000,
                               row.c.p50Nanoseconds / 1000, row.c.p99Nanoseconds / 1000, row.swiftOverCP50)
            }
            text += "\n| restore (\(guestMiB) MiB guest, \(touchMiB) MiB re-read) | → first guest exit ms | → ready ms | pages touched after resume |\n|---|---|---|---|\n"
            for row in restore {
                text += String(format: "| %@ | %.1f | %.1f | %d of %d (%.1f%%) |\n", row.loading, row.restoreToFirstGuestExitMilliseconds,
                               row.restoreToReadyMilliseconds, row.pagesTouchedAfterResume, row.guestPages, row.touchedShare * 100)
            }
            return text
        }
    }

    /// Restore figures of a published appliance's snapshot.
    public struct ApplianceRestoreFigures: Codable, Sendable {
        public var loading: String
        public var restores: Int
        /// Medians over the restores, from `Machine.init` (the restore starts) on.
        public var restoreToFirstGuestExitMilliseconds: Double
        public var restoreToReadyMilliseconds: Double
        public var restoreToSessionDoneMilliseconds: Double
        /// Pages first touched from the resume until the ready marker, and until the run ended
        /// (lazy only: an eager restore maps every page before the guest runs).
        public var pagesTouchedByReady: Int
        public var pagesTouchedBySessionEnd: Int
        public var guestPages: Int
        public var allRestoreMilliseconds: [[Double]]
        public var waitMode: String
    }

    public struct ApplianceReport: Codable, Sendable {
        public var host: String
        public var load: String
        public var appliance: String
        public var memoryMiB: Int
        public var restore: [ApplianceRestoreFigures]

        public var table: String {
            let mode = restore.first?.waitMode ?? "blocking"
            let count = restore.first?.restores ?? 0
            var text = "| restore of \(appliance) (\(memoryMiB) MiB, \(mode) handler, median of \(count)) | → first guest exit ms | → ready ms | → session done ms | pages touched by ready / by end |\n|---|---|---|---|---|\n"
            for row in restore {
                let share = { (pages: Int) in row.guestPages == 0 ? 0 : Double(pages) * 100 / Double(row.guestPages) }
                text += String(format: "| %@ | %.1f | %.1f | %.1f | %d (%.1f%%) / %d (%.1f%%) of %d |\n", row.loading, row.restoreToFirstGuestExitMilliseconds,
                               row.restoreToReadyMilliseconds, row.restoreToSessionDoneMilliseconds, row.pagesTouchedByReady, share(row.pagesTouchedByReady),
                               row.pagesTouchedBySessionEnd, share(row.pagesTouchedBySessionEnd), row.guestPages)
            }
            return text
        }
    }

    public let options: Options
    let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    /// Fault service beside the C handler, and restores of the snapshot test guest.
    public func run() throws -> Report {
        guard options.pages >= 100, options.rounds >= 1, options.restores >= 1, options.guestMiB >= 32, options.touchMiB >= 1,
              options.touchMiB + 8 <= options.guestMiB else {
            throw Failure("need --pages ≥ 100, positive counts, and --touch-mib + 8 ≤ --guest-mib")
        }
        let baseline = try compileBaseline()
        var comparisons: [HandlerComparison] = []
        for (mode, cMode) in [(PageFaultHandler.WaitMode.blocking, "blocking"), (.busyPolling, "busy")] {
            var swiftRuns: [Latency] = []
            var cRuns: [Latency] = []
            for _ in 0..<options.rounds {
                cRuns.append(try runBaseline(baseline, mode: cMode))
                let samples = try FaultLatencyProbe.measure(pages: options.pages, waitMode: mode).map { Double($0) }
                swiftRuns.append(Latency(p50Nanoseconds: Statistics.percentile(samples, 0.5)!, p99Nanoseconds: Statistics.percentile(samples, 0.99)!))
            }
            let swift = Self.median(swiftRuns)
            let c = Self.median(cRuns)
            comparisons.append(HandlerComparison(mode: mode.rawValue, swift: swift, c: c, swiftOverCP50: swift.p50Nanoseconds / c.p50Nanoseconds))
        }
        return Report(host: HostFacts.hostName(), load: HostFacts.loadAverage(), pagesPerRound: options.pages, rounds: options.rounds,
                      faultService: comparisons, guestMiB: options.guestMiB, touchMiB: options.touchMiB, restore: try restoreFigures())
    }

    static func median(_ runs: [Latency]) -> Latency {
        Latency(p50Nanoseconds: Statistics.median(runs.map(\.p50Nanoseconds))!, p99Nanoseconds: Statistics.median(runs.map(\.p99Nanoseconds))!)
    }

    private func compileBaseline() throws -> String {
        guard FileManager.default.fileExists(atPath: options.baselineSource) else {
            throw Failure("\(options.baselineSource) not found: run from the repository root or pass --baseline-source")
        }
        let output = NSTemporaryDirectory() + "streamvm-uffd-baseline-\(getpid())"
        let status = try Self.execute("/usr/bin/gcc", ["-O2", "-pthread", "-o", output, options.baselineSource]).status
        guard status == 0 else { throw Failure("gcc could not build \(options.baselineSource) (status \(status))") }
        return output
    }

    private func runBaseline(_ binary: String, mode: String) throws -> Latency {
        let (status, output) = try Self.execute(binary, [String(options.pages), mode])
        guard status == 0 else { throw Failure("C baseline failed (status \(status)): \(output)") }
        return try JSONDecoder().decode(Latency.self, from: Data(output.utf8))
    }

    /// Runs a program to completion; its standard output (standard error is dropped: the output is JSON).
    static func execute(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try SpawnedProcess.run(path, arguments: arguments, separateErrors: true)
    }

    private func restoreFigures() throws -> [RestoreFigures] {
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: options.guestImage)))
        let directory = NSTemporaryDirectory() + "streamvm-bench-uffd-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let commandLine = "mode=snapshot mib=\(options.touchMiB)"
        let snapshotting = try Machine(configuration: MachineConfiguration(memorySize: options.guestMiB << 20, image: .flat(image), commandLine: commandLine,
                                                                           pauseAtReady: true), logger: logger)
        guard snapshotting.run(timeout: .seconds(300)) == .stopRequested else { throw Failure("test guest did not reach ready: \(snapshotting.console.output)") }
        try snapshotting.saveSnapshot(to: directory)

        let milliseconds = Statistics.milliseconds
        var figures: [RestoreFigures] = []
        for loading in [RestorePlan.MemoryLoading.lazy, .eager] {
            var first: [Double] = []
            var ready: [Double] = []
            var touched = 0
            var guestPages = 0
            for _ in 0..<options.restores {
                let plan = try RestorePlan.load(directory: directory, loading: loading)
                let machine = try Machine(configuration: MachineConfiguration(memorySize: options.guestMiB << 20, image: .flat([]), restore: plan), logger: logger)
                let reason = machine.run(timeout: .seconds(300))
                guard reason == .powerOff(code: 0), machine.console.output.contains("bad pages 0x0000000000000000") else {
                    throw Failure("restored guest failed (\(reason)): \(machine.console.output)")
                }
                let timing = machine.timing
                guard let firstExit = timing.firstExit, let readyAt = timing.ready else { throw Failure("restored guest gave no timing marks") }
                first.append(milliseconds(firstExit - timing.created))
                ready.append(milliseconds(readyAt - timing.created))
                touched = machine.pageFaultHandler?.faultLog.count ?? 0
                guestPages = machine.pageFaultHandler?.pageCount ?? 0
            }
            figures.append(RestoreFigures(loading: loading.rawValue, restoreToFirstGuestExitMilliseconds: Statistics.median(first)!,
                                          restoreToReadyMilliseconds: Statistics.median(ready)!, pagesTouchedAfterResume: touched,
                                          guestPages: guestPages, touchedShare: guestPages == 0 ? 0 : Double(touched) / Double(guestPages)))
        }
        return figures
    }


    /// Restores a published appliance's snapshot (from `streamvm snapshot --at-ready`) lazily, lazily
    /// with the pages the last lazy restore touched before ready mapped first (working set), and
    /// eagerly, `options.restores` times each. It must resume, print its ready marker again, finish
    /// its session (STREAMVM-DONE status=0) and power off. `configuration` builds the machine around
    /// each restore plan (the CLI reads the appliance directory).
    public func applianceRestores(directory: String, appliance: String, memoryMiB: Int, waitMode mode: PageFaultHandler.WaitMode,
                                  configuration: (RestorePlan) -> MachineConfiguration) throws -> ApplianceReport {
        let restores = options.restores
        guard restores >= 1 else { throw Failure("--restores must be positive") }
        let milliseconds = Statistics.milliseconds
        func median(_ values: [Double]) -> Double { Statistics.median(values) ?? 0 }
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
                let machine = try Machine(configuration: configuration(plan), logger: logger)
                let reason = machine.run(timeout: .seconds(1800))
                let ended = ContinuousClock.now
                let output = machine.console.output
                guard reason == .powerOff(code: 0), output.contains("STREAMVM-DONE status=0") else {
                    throw Failure("\(loading.rawValue) restore \(index + 1) of \(directory) failed (\(reason)) [\(label)]; console:\n\(output.suffix(3000))")
                }
                let timing = machine.timing
                guard let firstExit = timing.firstExit, let ready = timing.ready else {
                    throw Failure("\(loading.rawValue) restore \(index + 1): no first exit or no ready marker after resuming")
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
        return ApplianceReport(host: HostFacts.hostName(), load: HostFacts.loadAverage(), appliance: appliance, memoryMiB: memoryMiB, restore: figures)
    }
}
