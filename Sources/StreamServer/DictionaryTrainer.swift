import Catalog
import Foundation

/// Trains a per-appliance zstd dictionary from a sample of its chunks and keeps it only when it
/// measurably improves the ratio on chunks it was not trained on.
struct DictionaryTrainer {
    /// Chunks sampled for training; zstd's guidance is ~100x the dictionary size of sample data.
    static let trainingSamples = 192
    /// Held-out chunks the decision is measured on.
    static let evaluationSamples = 64
    /// A dictionary must save at least this share of compressed bytes to be worth a round trip.
    static let minimumSaving = 0.03

    let chunkSize: Int
    let level: Int32

    /// Reads evenly spaced non-zero chunks from the artifacts, trains, evaluates, decides.
    func decide(artifacts: [(role: ArtifactRole, path: String, size: Int)]) throws -> (ZstdDictionary?, DictionaryDecision) {
        let samples = try sample(artifacts: artifacts, count: Self.trainingSamples + Self.evaluationSamples)
        // Interleave so that training and evaluation cover the same parts of the image.
        var training: [[UInt8]] = [], evaluation: [[UInt8]] = []
        let stride = max(2, samples.count / Self.evaluationSamples)
        for (index, chunk) in samples.enumerated() {
            if index % stride == stride - 1 && evaluation.count < Self.evaluationSamples { evaluation.append(chunk) } else { training.append(chunk) }
        }
        let plain = try ZstdCompressor(level: level)
        let inputBytes = evaluation.reduce(0) { $0 + $1.count }
        let withoutBytes = try evaluation.reduce(0) { $0 + (try plain.compress($1)).count }
        let ratioWithout = withoutBytes == 0 ? 0 : Double(inputBytes) / Double(withoutBytes)
        guard !evaluation.isEmpty, let dictionary = ZstdDictionary.train(samples: training) else {
            return (nil, DictionaryDecision(used: false, digest: nil, sampleChunks: samples.count, ratioWithout: ratioWithout,
                                            ratioWith: nil, reason: "too few distinct chunks to train a dictionary"))
        }
        let withDictionary = try ZstdCompressor(level: level, dictionary: dictionary)
        let withBytes = try evaluation.reduce(0) { $0 + (try withDictionary.compress($1)).count }
        let ratioWith = Double(inputBytes) / Double(withBytes)
        let saving = 1 - Double(withBytes) / Double(withoutBytes)
        let used = saving >= Self.minimumSaving
        let reason = String(format: "dictionary saves %.1f%% on %d held-out chunks (threshold %.0f%%)",
                            saving * 100, evaluation.count, Self.minimumSaving * 100)
        return (used ? dictionary : nil,
                DictionaryDecision(used: used, digest: used ? dictionary.digest : nil, sampleChunks: samples.count,
                                   ratioWithout: ratioWithout, ratioWith: ratioWith, reason: reason))
    }

    private func sample(artifacts: [(role: ArtifactRole, path: String, size: Int)], count: Int) throws -> [[UInt8]] {
        let totalChunks = artifacts.reduce(0) { $0 + ($1.size + chunkSize - 1) / chunkSize }
        let step = max(1, totalChunks / count)
        var samples: [[UInt8]] = []
        var globalIndex = 0
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        for artifact in artifacts {
            let reader = try ArtifactReader(path: artifact.path)
            let chunks = (artifact.size + chunkSize - 1) / chunkSize
            var slot = (step - globalIndex % step) % step
            while slot < chunks && samples.count < count {
                // Sparse images are mostly zero chunks: walk forward within the slot to the first data chunk.
                for index in slot..<min(slot + step, chunks) {
                    let length = min(chunkSize, artifact.size - index * chunkSize)
                    try buffer.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<length]), at: index * chunkSize) }
                    let isZero = buffer.withUnsafeBytes { ZeroDetection.isAllZero(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
                    if !isZero {
                        samples.append(Array(buffer[0..<length]))
                        break
                    }
                }
                slot += step
            }
            globalIndex += chunks
        }
        return samples
    }
}

/// Positional reads from an artifact file, retried on EINTR; a short file is an error, not a short read.
final class ArtifactReader {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ServerError.unreadableArtifact(path: path, errno: errno) }
    }

    deinit { close(fd) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ServerError.unreadableArtifact(path: path, errno: errno)
            }
            if n == 0 { throw ServerError.artifactChanged(path: path) }
            done += n
        }
    }
}
