import ArgumentParser
import Benchmarks
import Foundation
import Hypervisor
import Logging

/// `streamvm bench uffd`: lazy guest memory figures, as JSON plus a Markdown table (the work is in
/// `Benchmarks.UffdBenchmark`).
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

    func run() throws {
        var logger = Logger(label: "streamvm.bench.uffd")
        logger.logLevel = .warning
        let benchmark = UffdBenchmark(options: UffdBenchmark.Options(guestImage: guest, baselineSource: baselineSource, pages: pages, rounds: rounds,
                                                                     restores: restores, guestMiB: guestMiB, touchMiB: touchMiB),
                                      logger: logger)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        let table: String
        if let appliance {
            let setup = try ApplianceSetup(directory: appliance)
            let report = try benchmark.applianceRestores(directory: appliance, appliance: setup.config.name, memoryMiB: setup.config.memoryMiB,
                                                         waitMode: waitMode, configuration: { setup.machineConfiguration(restore: $0) })
            (data, table) = (try encoder.encode(report), report.table)
        } else {
            let report = try benchmark.run()
            (data, table) = (try encoder.encode(report), report.table)
        }
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json), options: .atomic) }
        print("\n" + table, terminator: "")
    }
}
