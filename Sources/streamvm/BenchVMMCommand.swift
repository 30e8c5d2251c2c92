import ArgumentParser
import Benchmarks
import Foundation
import Logging

/// `streamvm bench vmm`: the VMM's footprint (resident memory of an idle `streamvm run`, guest RAM
/// apart, with and without the startup-page release), start → first guest exit, and virtio-blk
/// figures, as JSON plus a Markdown table (the work is in `Benchmarks.VMMBenchmark`).
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

    @Option(name: .customLong("footprint-runs"), help: "`streamvm run` children measured per variant (startup pages released / kept).")
    var footprintRuns = 3

    @Flag(name: .customLong("no-eventfds"), help: "Serve virtio notifications on the vCPU thread (no ioeventfd/irqfd), for comparison.")
    var noEventFDs = false

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() throws {
        var logger = Logger(label: "streamvm.bench.vmm")
        logger.logLevel = .warning
        var options = VMMBenchmark.Options(guestImage: guest, executable: "/proc/self/exe")
        options.executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        options.iterations = iterations
        options.randomReads = randomReads
        options.sequentialMiB = sequentialMiB
        options.diskMiB = diskMiB
        options.footprintRuns = footprintRuns
        options.useEventFDs = !noEventFDs
        let report = try VMMBenchmark(options: options, logger: logger).run()
        try BenchReportOutput.emit(report, table: report.table, json: json)
    }
}
