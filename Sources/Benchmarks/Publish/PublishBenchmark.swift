import Catalog
import Foundation
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient
import Logging

/// Publishes one appliance at several chunk sizes (and with and without a dictionary) into scratch
/// catalogues and reports ratio, throughput and index overhead, which is how the default chunk size
/// was chosen.
public struct PublishBenchmark {
    public struct Row: Codable, Sendable {
        public var chunkKiB: Int
        public var dictionary: Bool
        public var level: Int32
        public var workers: Int
        public var bytesIn: Int
        public var storedBytes: Int
        public var ratio: Double
        public var megabytesPerSecond: Double
        /// Input throughput divided by the workers used: the issue asks for MB/s per core.
        public var megabytesPerSecondPerCore: Double
        public var chunks: Int
        public var storedChunks: Int
        public var zeroChunks: Int
        public var manifestBytes: Int
        public var sampleRatioWithoutDictionary: Double
        public var sampleRatioWithDictionary: Double?
        public var perArtifact: [String: Double]
    }

    let appliance: ApplianceDirectory
    let scratch: String
    let logger: Logger

    public init(appliance: ApplianceDirectory, scratch: String, logger: Logger) {
        self.appliance = appliance
        self.scratch = scratch
        self.logger = logger
    }

    public func run(chunkKiBs: [Int], level: Int32, workers: Int) throws -> [Row] {
        var rows: [Row] = []
        for chunkKiB in chunkKiBs {
            for dictionary in [false, true] {
                let root = "\(scratch)/bench-\(chunkKiB)-\(dictionary)-\(UUID())"
                defer { try? FileManager.default.removeItem(atPath: root) }
                let store = try CatalogDirectory(root: root, create: true)
                var options = PublishOptions()
                options.chunkSize = chunkKiB * 1024
                options.level = level
                options.trainDictionary = dictionary
                options.workers = workers
                let summary = try Publisher(catalog: store, key: SigningKey(), options: options, logger: logger).publish(appliance)
                let manifestBytes = try store.read(.manifest(summary.manifest)).count
                rows.append(Row(
                    chunkKiB: chunkKiB, dictionary: summary.dictionary.used, level: level, workers: workers,
                    bytesIn: summary.bytesIn, storedBytes: summary.bytesStored, ratio: Double(summary.bytesIn) / Double(max(1, summary.bytesStored)),
                    megabytesPerSecond: summary.megabytesPerSecond, megabytesPerSecondPerCore: summary.megabytesPerSecond / Double(workers),
                    chunks: summary.chunks, storedChunks: summary.newChunks, zeroChunks: summary.zeroChunks, manifestBytes: manifestBytes,
                    sampleRatioWithoutDictionary: summary.dictionary.ratioWithout, sampleRatioWithDictionary: summary.dictionary.ratioWith,
                    perArtifact: Dictionary(uniqueKeysWithValues: summary.artifacts.map { ($0.role.rawValue, $0.ratio) })))
                // Training without using the dictionary repeats the plain run: drop the duplicate row but
                // keep both sample ratios on the plain row, so the report says why no dictionary was used.
                if dictionary && !summary.dictionary.used {
                    rows.removeLast()
                    if let plain = rows.indices.last, rows[plain].chunkKiB == chunkKiB {
                        rows[plain].sampleRatioWithoutDictionary = summary.dictionary.ratioWithout
                        rows[plain].sampleRatioWithDictionary = summary.dictionary.ratioWith
                    }
                }
            }
        }
        return rows
    }
}
