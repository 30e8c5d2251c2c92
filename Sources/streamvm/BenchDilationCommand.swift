import ArgumentParser
import Benchmarks
import Logging

/// `streamvm bench dilation`: perceived against real time of the clock test guest under each
/// time-dilation factor, as JSON plus a Markdown table (the work is in `Benchmarks.DilationBenchmark`).
struct BenchDilationCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dilation", abstract: "Benchmark time dilation: perceived against real time for TDF 1, 2, 5 and 10.")

    @Option(help: "Flat test guest image (build it with appliances/testguest/build.sh).")
    var guest = ".build-appliances/testguest/testguest.bin"

    @Flag(help: "Shorter runs (5 intervals of 100 ms perceived per factor) that finish in about half a minute.")
    var quick = false

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() throws {
        var logger = Logger(label: "streamvm.bench.dilation")
        logger.logLevel = .warning
        let report = try DilationBenchmark(options: DilationBenchmark.Options(guestImage: guest, quick: quick), logger: logger).run()
        try BenchReportOutput.emit(report, table: report.table, json: json, snakeCaseKeys: true)
    }
}
