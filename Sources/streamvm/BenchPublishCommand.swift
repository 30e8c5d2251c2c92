import Benchmarks
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

    @Option(name: .customLong("chunk-kib"), help: "Chunk sizes in KiB, comma separated.")
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
        let sizes = try chunkKiB.split(separator: ",").map { field -> Int in
            guard let size = Int(field), size > 0 else { throw ValidationError("--chunk-kib: '\(field)' is not a positive number of KiB") }
            return size
        }
        let rows = try PublishBenchmark(appliance: try ApplianceDirectory(path: appliance), scratch: scratch,
                                        logger: Logger(label: "streamvm.bench")).run(chunkKiBs: sizes, level: level, workers: workers)
        print("| chunk | dict | ratio | MB/s | MB/s/core | chunks | stored | zero | manifest KiB | sample ratio without / with dict | ratio per artifact |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in rows {
            let sample = String(format: "%.2f / ", row.sampleRatioWithoutDictionary)
                + (row.sampleRatioWithDictionary.map { String(format: "%.2f", $0) } ?? "not trained")
            let artifacts = row.perArtifact.sorted { $0.key < $1.key }.map { "\($0.key) " + String(format: "%.2f", $0.value) }.joined(separator: ", ")
            print("| \(row.chunkKiB) KiB | \(row.dictionary ? "yes" : "no") | " + String(format: "%.2f | %.1f | %.1f | %d | %d | %d | %.1f |",
                  row.ratio, row.megabytesPerSecond, row.megabytesPerSecondPerCore, row.chunks, row.storedChunks, row.zeroChunks,
                  Double(row.manifestBytes) / 1024) + " \(sample) | \(artifacts) |")
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try encoder.encode(rows), to: json)
        }
    }
}
