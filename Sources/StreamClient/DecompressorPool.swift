import Catalog
import Foundation

/// Reusable zstd contexts: a context is not thread-safe, and building one (with its dictionaries)
/// for every chunk would cost more than decompressing a small chunk.
final class DecompressorPool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [ZstdDecompressor] = []
    /// Contexts kept when idle; more than the number of cores gains nothing.
    private let keep = 16

    func withDecompressor<T>(_ body: (ZstdDecompressor) throws -> T) throws -> T {
        lock.lock()
        let reused = idle.popLast()
        lock.unlock()
        let decompressor = try reused ?? ZstdDecompressor()
        defer {
            lock.lock()
            if idle.count < keep { idle.append(decompressor) }
            lock.unlock()
        }
        return try body(decompressor)
    }
}

/// Decompresses a chunk frame and checks the result against the chunk's name: the one place where
/// fetched or cached frames become trusted bytes.
enum ChunkDecoder {
    static func decode(frame: Data, chunk: ChunkID, length: Int, dictionary: ZstdDictionary?,
                       pool: DecompressorPool) throws -> [UInt8] {
        let name = "chunk \(chunk.short)"
        let bytes = try pool.withDecompressor { decompressor in
            if let dictionary { decompressor.add(dictionary) }
            return try frame.withUnsafeBytes { try decompressor.decompress($0, expectedSize: length, object: name) }
        }
        let actual = Digest.of(bytes)
        guard actual == chunk else { throw CatalogError.digestMismatch(object: name, actual: actual.hex) }
        return bytes
    }
}
