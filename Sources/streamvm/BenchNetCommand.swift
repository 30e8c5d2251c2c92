import ArgumentParser
import Benchmarks
import Foundation
import Hypervisor

/// `streamvm bench net`: the host switch's throughput and shaping accuracy, as JSON plus a
/// Markdown table (the work is in `Benchmarks.NetBenchmark`).
struct BenchNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "net", abstract: "Benchmark the host network switch (throughput, shaping accuracy).")

    @Flag(help: "Shorter runs (1 s per figure, 200 delay probes).")
    var quick = false

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    @Option(help: "Flat test guest image for the guest-to-guest figures (build it with appliances/testguest/build.sh); skipped with a note when absent or without /dev/kvm.")
    var guest = ".build-appliances/testguest/testguest.bin"

    func run() throws {
        var image: [UInt8]?
        if !FileManager.default.fileExists(atPath: guest) {
            FileHandle.standardError.write(Data("bench net: no test guest at \(guest) (appliances/testguest/build.sh): guest-to-guest figures skipped\n".utf8))
        } else if !KVMSystem.isAvailable {
            FileHandle.standardError.write(Data("bench net: /dev/kvm is not usable: guest-to-guest figures skipped\n".utf8))
        } else {
            image = Array(try Data(contentsOf: URL(fileURLWithPath: guest)))
        }
        let report = try NetBenchmark(options: NetBenchmark.Options(quick: quick, guestImage: image)).run()
        try BenchReportOutput.emit(report, table: report.table, json: json)
    }
}
