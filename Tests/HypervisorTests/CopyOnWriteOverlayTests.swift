import Foundation
import Testing
@testable import Hypervisor

/// A base that is not a file (as a streamed disk is not): bytes in memory, counting reads, refusing writes.
private final class MemoryBase: BlockBackend, @unchecked Sendable {
    let bytes: [UInt8]
    let reads = Locked(0)
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var size: UInt64 { UInt64(bytes.count) }
    var isReadOnly: Bool { true }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        reads.withLock { $0 += 1 }
        buffer.copyBytes(from: bytes[Int(offset)..<(Int(offset) + buffer.count)])
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws { throw HypervisorError.ioFailed("the base is read-only") }
    func flush() throws {}
}

/// The one copy-on-write overlay (docs/FORMAT.md, "Disk overlay"): over any base, persistent,
/// refusing damaged or foreign files with an error that names the file.
struct CopyOnWriteOverlayTests {
    private static func contents(_ backend: any BlockBackend) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(backend.size))
        try bytes.withUnsafeMutableBytes { try backend.read(at: 0, into: $0) }
        return bytes
    }

    private static func write(_ backend: any BlockBackend, _ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try backend.write(at: UInt64(offset), from: $0) }
    }

    /// Unaligned writes inside a block, across block boundaries and at the unaligned end of the disk.
    private static let writes: [(Int, [UInt8])] = [
        (100, [UInt8](repeating: 0xaa, count: 10)),
        (4090, [UInt8](repeating: 0xbb, count: 20)),
        (3 * 4096 - 3, [UInt8](repeating: 0xcc, count: 9000)),
        (40_000 - 5, [1, 2, 3, 4, 5]),
    ]

    @Test func writesReadBackOverANonFileBaseAndSurviveReopening() throws {
        let scratch = try ScratchDirectory()
        let original = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        let base = MemoryBase(original)
        let path = scratch.file("disk.overlay")
        var expected = original
        do {
            let overlay = try CopyOnWriteOverlay(base: base, overlayPath: path, baseIdentity: "sha256:aa")
            for (offset, bytes) in Self.writes {
                try Self.write(overlay, bytes, at: offset)
                expected.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            }
            #expect(try Self.contents(overlay) == expected)
            #expect(overlay.covers(4096..<8192))
            #expect(!overlay.covers(24576..<28672))
            #expect(throws: HypervisorError.self) { try Self.write(overlay, [1, 2], at: 40_000 - 1) }
            try overlay.flush()
        }
        #expect(base.bytes == original)
        let reopened = try CopyOnWriteOverlay(base: base, overlayPath: path, baseIdentity: "sha256:aa")
        let readsBefore = base.reads.withLock { $0 }
        #expect(try Self.contents(reopened) == expected)
        // Block 1 (4096..<8192) is wholly in the overlay: reading it does not touch the base.
        base.reads.withLock { $0 = 0 }
        var block = [UInt8](repeating: 0, count: 4096)
        try block.withUnsafeMutableBytes { try reopened.read(at: 4096, into: $0) }
        #expect(base.reads.withLock { $0 } == 0)
        #expect(readsBefore > 0)
    }

    @Test func onlyFlushedWritesReachTheMapAndItNamesItsImage() throws {
        let scratch = try ScratchDirectory()
        let base = MemoryBase([UInt8](repeating: 5, count: 64 * 1024))
        let path = scratch.file("overlay")
        let overlay = try CopyOnWriteOverlay(base: base, overlayPath: path, baseIdentity: "sha256:image-a")
        try Self.write(overlay, [UInt8](repeating: 9, count: 4096), at: 8192)
        // Before the flush no map claims the block: a crash now reads the base.
        #expect(!FileManager.default.fileExists(atPath: overlay.mapPath))
        try overlay.flush()
        let map = try #require(FileManager.default.contents(atPath: overlay.mapPath))
        #expect(map.starts(with: Array("streamvm-cowmap\n".utf8)))
        #expect(map[map.count - 8] == 0b100, "block 2 is bit 2 of the first word")
        #expect(throws: HypervisorError.invalidOverlay(path: overlay.mapPath, problem: "it belongs to another image (sha256:image-a), not sha256:image-b")) {
            _ = try CopyOnWriteOverlay(base: base, overlayPath: path, baseIdentity: "sha256:image-b")
        }
        // Without an identity to check, it opens, and keeps the recorded one.
        #expect(try CopyOnWriteOverlay(base: base, overlayPath: path).baseIdentity == "sha256:image-a")
    }

    /// Damaged files are refused with the file's name, and nothing is changed on the way.
    @Test func damagedOrForeignFilesGiveAnErrorNamingTheFile() throws {
        let scratch = try ScratchDirectory()
        let base = MemoryBase([UInt8](repeating: 1, count: 64 * 1024))
        let path = scratch.file("overlay")
        do {
            let overlay = try CopyOnWriteOverlay(base: base, overlayPath: path)
            try Self.write(overlay, [UInt8](repeating: 2, count: 4096), at: 60 * 1024)
            try overlay.flush()
        }
        let goodMap = try #require(FileManager.default.contents(atPath: path + ".map"))
        func expectRefused(naming file: String, _ containing: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(sourceLocation: sourceLocation) { _ = try CopyOnWriteOverlay(base: base, overlayPath: path) } throws: { error in
                guard case let .invalidOverlay(named, problem) = error as? HypervisorError else { return false }
                return named == file && problem.contains(containing) && "\(error)".contains(file)
            }
        }
        // A truncated map.
        try goodMap.prefix(goodMap.count - 3).write(to: URL(fileURLWithPath: path + ".map"))
        expectRefused(naming: path + ".map", "truncated")
        try goodMap.prefix(20).write(to: URL(fileURLWithPath: path + ".map"))
        expectRefused(naming: path + ".map", "truncated")
        // A flipped bit in the bitmap.
        var flipped = goodMap
        flipped[flipped.count - 1] ^= 0x10
        try flipped.write(to: URL(fileURLWithPath: path + ".map"))
        expectRefused(naming: path + ".map", "checksum")
        // Not a map at all.
        try Data(repeating: 0x41, count: 100).write(to: URL(fileURLWithPath: path + ".map"))
        expectRefused(naming: path + ".map", "not an overlay block map")
        // A map of another disk size.
        try goodMap.write(to: URL(fileURLWithPath: path + ".map"))
        #expect { _ = try CopyOnWriteOverlay(base: MemoryBase([UInt8](repeating: 1, count: 128 * 1024)), overlayPath: path) } throws: {
            "\($0)".contains(path + ".map") && "\($0)".contains("belongs to a 65536-byte disk")
        }
        // A data file cut short below a written block; it is left as it was.
        #expect(truncate(path, 8192) == 0)
        expectRefused(naming: path, "truncated")
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) == 8192)
        // An overlay in the format of the earlier client-side overlay class.
        let old = scratch.file("old")
        for suffix in [".data", ".bitmap", ".json"] { _ = FileManager.default.createFile(atPath: old + suffix, contents: Data()) }
        #expect { _ = try CopyOnWriteOverlay(base: base, overlayPath: old) } throws: { "\($0)".contains(old + ".data") && "\($0)".contains("format StreamVM used before") }
    }

    /// Overlays written before the map had a header (a bare bitmap) still open, so snapshots that
    /// refer to them restore; the next flush rewrites the map with the header.
    @Test func aHeaderlessMapOfTheEarlierLayoutIsReadAndUpgraded() throws {
        let scratch = try ScratchDirectory()
        let original = patternedDisk(sectors: 32)
        let base = MemoryBase(original)
        let path = scratch.file("overlay.img")
        var data = [UInt8](repeating: 0, count: original.count)
        data.replaceSubrange(4096..<8192, with: [UInt8](repeating: 0x5a, count: 4096))
        try Data(data).write(to: URL(fileURLWithPath: path))
        var word = UInt64(0b10).littleEndian
        try Data(bytes: &word, count: 8).write(to: URL(fileURLWithPath: path + ".map"))
        var expected = original
        expected.replaceSubrange(4096..<8192, with: [UInt8](repeating: 0x5a, count: 4096))
        do {
            let overlay = try CopyOnWriteOverlay(base: base, overlayPath: path)
            #expect(try Self.contents(overlay) == expected)
            try overlay.flush()
        }
        #expect(FileManager.default.contents(atPath: path + ".map")?.starts(with: Array("streamvm-cowmap\n".utf8)) == true)
        #expect(try Self.contents(try CopyOnWriteOverlay(base: base, overlayPath: path)) == expected)
    }

    @Test func aScratchOverlayLeavesNoFilesBehind() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("scratch")
        do {
            let overlay = try CopyOnWriteOverlay(base: MemoryBase([UInt8](repeating: 0, count: 8192)), overlayPath: path, removeOnClose: true)
            try Self.write(overlay, [7], at: 10)
            try overlay.flush()
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(!FileManager.default.fileExists(atPath: path + ".map"))
    }
}
