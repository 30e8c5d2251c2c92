import ArgumentParser
import Catalog
import Foundation
import Logging
import StreamServer

struct BenchPublishCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Measure publish ratio and throughput at several chunk sizes.")

    @Argument(help: "Appliance directory to publish.")
    var appliance: String

    @Option(help: "Chunk sizes in KiB, comma separated.")
    var chunkKiB = "16,64,256"

    @Option(help: "zstd level.")
    var level: Int32 = ZstdCompressor.defaultLevel

    @Option(help: "Worker threads (default: all cores).")
    var workers = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Scratch directory for the catalogues (removed afterwards).")
    var scratch = NSTemporaryDirectory()

    @Option(help: "Write the rows as JSON to this file.")
    var json: String?

    func run() throws {
        let sizes = chunkKiB.split(separator: ",").compactMap { Int($0) }
        let rows = try PublishBenchmark(appliance: try ApplianceDirectory(path: appliance), scratch: scratch,
                                        logger: Logger(label: "streamvm.bench")).run(chunkKiBs: sizes, level: level, workers: workers)
        print("| chunk | dict | ratio | MB/s | MB/s/core | chunks | stored | zero | manifest KiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in rows {
            print("| \(row.chunkKiB) KiB | \(row.dictionary ? "yes" : "no") | " + String(format: "%.2f | %.1f | %.1f | %d | %d | %d | %.1f |",
                  row.ratio, row.megabytesPerSecond, row.megabytesPerSecondPerCore, row.chunks, row.storedChunks, row.zeroChunks,
                  Double(row.manifestBytes) / 1024))
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try encoder.encode(rows), to: json)
        }
    }
}
