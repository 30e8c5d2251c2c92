import Catalog
import Foundation

/// What one publish did, for the closing summary line, JSON output and benchmarks.
public struct PublishSummary: Codable, Sendable {
    public struct ArtifactFigures: Codable, Sendable {
        public var role: ArtifactRole
        public var bytes: Int
        public var chunks: Int
        public var zeroChunks: Int
        /// Sum of the stored (compressed) sizes of its non-zero chunks.
        public var storedBytes: Int
        /// Input bytes per stored byte, zero chunks included (they cost nothing).
        public var ratio: Double { storedBytes == 0 ? Double.infinity : Double(bytes) / Double(storedBytes) }
    }

    public var appliance: String
    public var version: String
    public var manifest: Digest
    public var chunkSize: Int
    public var level: Int32
    public var chunks: Int
    public var newChunks: Int
    public var zeroChunks: Int
    public var bytesIn: Int
    /// Bytes written to the catalogue by this run (new chunks, dictionary, manifest).
    public var bytesStored: Int
    /// Compressed size of the whole version (what a full download transfers).
    public var compressedBytes: Int
    public var artifacts: [ArtifactFigures]
    public var dictionary: DictionaryDecision
    public var seconds: Double

    public var ratio: Double { compressedBytes == 0 ? Double.infinity : Double(bytesIn) / Double(compressedBytes) }
    public var megabytesPerSecond: Double { seconds > 0 ? Double(bytesIn) / 1e6 / seconds : 0 }

    public var line: String {
        "\(appliance)@\(version): "
            + String(format: "%d chunks, %d new, %d zero; %.1f MB in, %.1f MB stored; ratio %.2f; %.1f MB/s; ",
                     chunks, newChunks, zeroChunks, Double(bytesIn) / 1e6, Double(bytesStored) / 1e6, ratio, megabytesPerSecond)
            + "manifest \(manifest.short)"
    }
}

/// Whether a trained dictionary was used, and the ratios with and without it on the evaluation sample.
public struct DictionaryDecision: Codable, Sendable {
    public var used: Bool
    public var digest: Digest?
    public var sampleChunks: Int
    public var ratioWithout: Double
    public var ratioWith: Double?
    public var reason: String
}
