import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamClient

@Suite struct ChunkCacheTests {
    private func chunk(_ seed: UInt8, size: Int = 4096) -> (ChunkID, [UInt8]) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7) ^ seed }
        return (Digest.of(bytes), bytes)
    }

    @Test func storesAndReadsRanges() throws {
        let directory = try TemporaryDirectory()
        let cache = try ChunkCache(root: directory.path, capacityBytes: 1 << 20, logger: ClientHarness.logger)
        let (id, bytes) = chunk(1)
        #expect(cache.read(id, length: bytes.count) == nil)
        try cache.insert(id, bytes: bytes)
        #expect(cache.read(id, length: bytes.count) == bytes)
        #expect(cache.read(id, length: bytes.count, range: 100..<200) == Array(bytes[100..<200]))
        // A wrong expected length is a miss, not a short read.
        #expect(cache.read(id, length: bytes.count + 1) == nil)
        // A fresh process sees the chunk (persistent).
        let reopened = try ChunkCache(root: directory.path, capacityBytes: 1 << 20, logger: ClientHarness.logger)
        #expect(reopened.read(id, length: bytes.count) == bytes)
        #expect(reopened.statistics().chunks == 1)
    }

    @Test func damagedFilesAreNeverReturned() throws {
        let directory = try TemporaryDirectory()
        let cache = try ChunkCache(root: directory.path, capacityBytes: 1 << 20, logger: ClientHarness.logger)
        let (id, bytes) = chunk(2)
        try cache.insert(id, bytes: bytes)
        var damaged = bytes
        damaged[17] ^= 1
        try Data(damaged).write(to: URL(fileURLWithPath: cache.path(id)))
        // A new process (nothing verified yet) hashes on first read and deletes the damaged file.
        let reopened = try ChunkCache(root: directory.path, capacityBytes: 1 << 20, logger: ClientHarness.logger)
        #expect(reopened.read(id, length: bytes.count, range: 0..<10) == nil)
        #expect(!FileManager.default.fileExists(atPath: cache.path(id)))

        try cache.insert(id, bytes: bytes)
        try Data(damaged).write(to: URL(fileURLWithPath: cache.path(id)))
        let third = try ChunkCache(root: directory.path, capacityBytes: 1 << 20, logger: ClientHarness.logger)
        let report = third.verifyAll()
        #expect(report.checked == 1)
        #expect(report.damagedRemoved == 1)
    }

    @Test func evictsLeastRecentlyUsedButNeverPinned() throws {
        let directory = try TemporaryDirectory()
        // Room for four 4 KiB chunks; inserting a fifth evicts down to 90 %, i.e. to three.
        let cache = try ChunkCache(root: directory.path, capacityBytes: 4 * 4096, logger: ClientHarness.logger)
        let chunks = (1...5).map { chunk(UInt8($0)) }
        let pin = try cache.pin(owner: "running-appliance")
        try pin.add([chunks[0].0])
        for (index, (id, bytes)) in chunks.prefix(4).enumerated() {
            try cache.insert(id, bytes: bytes)
            // Distinct use times: older chunks were used earlier.
            var times = [timespec(tv_sec: 1_000_000 + index, tv_nsec: 0), timespec(tv_sec: 1_000_000 + index, tv_nsec: 0)]
            utimensat(AT_FDCWD, cache.path(id), &times, 0)
        }
        let reopened = try ChunkCache(root: directory.path, capacityBytes: 4 * 4096, logger: ClientHarness.logger)
        try reopened.insert(chunks[4].0, bytes: chunks[4].1)
        // Chunk 0 is oldest but pinned; chunks 1 and 2 are the least recently used unpinned ones.
        #expect(reopened.contains(chunks[0].0))
        #expect(!reopened.contains(chunks[1].0))
        #expect(!reopened.contains(chunks[2].0))
        #expect(reopened.contains(chunks[3].0))
        #expect(reopened.contains(chunks[4].0))
        #expect(reopened.statistics().pinnedChunks == 1)

        // Once released, the pin no longer protects.
        pin.release()
        reopened.evict(downTo: 0)
        #expect(reopened.statistics().chunks == 0)
    }

    @Test func pinOfADeadOwnerIsRemoved() throws {
        let directory = try TemporaryDirectory()
        let cache = try ChunkCache(root: directory.path, capacityBytes: 1 << 20, logger: ClientHarness.logger)
        let (id, bytes) = chunk(9)
        try cache.insert(id, bytes: bytes)
        // A pin file nobody holds a lock on: what a crashed client leaves behind.
        let stalePath = "\(cache.pinsDirectory)/crashed-1.pin"
        try Data(id.bytes).write(to: URL(fileURLWithPath: stalePath))
        #expect(cache.statistics().pinnedChunks == 0)
        #expect(!FileManager.default.fileExists(atPath: stalePath))
        // Leftover temp files of a dead writer go too; pid 2^22+1 is above Linux's pid_max default.
        let temp = "\(cache.chunksDirectory)/\(id.hex.prefix(2))/.tmp-\(id.hex)-4194305-1234"
        _ = FileManager.default.createFile(atPath: temp, contents: Data([1, 2, 3]))
        let report = cache.collectGarbage()
        #expect(report.removedTempFiles == 1)
        #expect(cache.contains(id))
    }
}
