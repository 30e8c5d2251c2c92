import ArgumentParser
import Benchmarks
import Foundation
import Logging

/// `streamvm bench dedup`: guest RAM with nothing, with KSM at its best and with the dedup engine,
/// as JSON plus a Markdown table (the work is in `Benchmarks.DedupBenchmark`). Needs /dev/kvm,
/// userfaultfd and a writable /sys/kernel/mm/ksm (root); KSM's settings are put back afterwards.
struct BenchDedupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dedup", abstract: "Benchmark the dedup engine against KSM on a mix of running test guests.")

    @Option(help: "Flat test guest image (build it with appliances/testguest/build.sh).")
    var guest = ".build-appliances/testguest/testguest.bin"

    @Flag(help: "A reduced mix (2 copies + 1 different guest, 2 MiB regions) that finishes in minutes.")
    var quick = false

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() throws {
        var logger = Logger(label: "streamvm.bench.dedup")
        logger.logLevel = .warning
        let report = try DedupBenchmark(options: DedupBenchmark.Options(guestImage: guest, quick: quick), logger: logger).run()
        try BenchReportOutput.emit(report, table: report.table, json: json, snakeCaseKeys: true)
    }
}
