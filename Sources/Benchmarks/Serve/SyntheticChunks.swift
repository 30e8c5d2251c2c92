import Catalog
import Foundation

/// Deterministic chunk contents that compress roughly like a VM disk image: a mix of text (logs,
/// configs), structured binary (tables of small integers), already-compressed data (random bytes)
/// and sparse blocks. A fixed seed makes every benchmark run serve the same bytes.
struct SyntheticChunks {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// SplitMix64 (Steele, Lea, Flood 2014): fast, good enough to make data, not for cryptography.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private static let words = ["kernel", "systemd", "started", "mount", "network", "eth0", "service", "unit",
                                "error", "ok", "debug", "config", "/usr/lib", "/etc", "libc.so.6", "0x7ffd",
                                "user", "session", "daemon", "reload", "ready", "state", "value", "=", ";", "\n"]

    /// One chunk of `size` bytes made of 4 KiB blocks of the four kinds (text 40%, binary 30%,
    /// random 20%, sparse 10%).
    mutating func chunk(size: Int) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(size)
        let block = 4096
        while bytes.count < size {
            let length = min(block, size - bytes.count)
            let kind = next() % 10
            var piece = [UInt8]()
            piece.reserveCapacity(length)
            switch kind {
            case 0..<4:
                while piece.count < length {
                    piece.append(contentsOf: Self.words[Int(next() % UInt64(Self.words.count))].utf8)
                    piece.append(UInt8(ascii: " "))
                }
            case 4..<7:
                while piece.count < length {
                    let value = UInt32(truncatingIfNeeded: next() % 4096)
                    withUnsafeBytes(of: value.littleEndian) { piece.append(contentsOf: $0) }
                }
            case 7..<9:
                while piece.count < length {
                    withUnsafeBytes(of: next()) { piece.append(contentsOf: $0) }
                }
            default:
                piece = [UInt8](repeating: 0, count: length)
                piece[Int(next() % UInt64(length))] = UInt8(truncatingIfNeeded: next() | 1)
            }
            bytes.append(contentsOf: piece.prefix(length))
        }
        return bytes
    }

    /// Writes `count` distinct chunks of `size` bytes into `directory`; returns their objects and the
    /// total stored (compressed) bytes.
    static func makeCatalogue(in directory: CatalogDirectory, count: Int, size: Int, seed: UInt64 = 42) throws -> (objects: [CatalogObject], storedBytes: Int) {
        var generator = SyntheticChunks(seed: seed)
        // Level 3 is zstd's default; the publisher's level only changes sizes a little, not serving.
        let compressor = try ZstdCompressor(level: 3)
        var objects = [CatalogObject]()
        var stored = 0
        for _ in 0..<count {
            let bytes = generator.chunk(size: size)
            let frame = try compressor.compress(bytes)
            let object = CatalogObject.chunk(Digest.of(bytes))
            try directory.write(object, data: frame)
            objects.append(object)
            stored += frame.count
        }
        return (objects, stored)
    }
}
