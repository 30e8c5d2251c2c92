import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamClient

@Suite struct OverlayTests {
    @Test func writesOverlayTheImageAndSurviveReopening() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 16)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        var expected = fixture.image
        let overlayPath = directory.sub("disk-overlay")
        do {
            let image = try await harness.openDisk(fixture, overlayPath: overlayPath)
            // Unaligned writes: inside one block, across a block boundary, across a chunk boundary.
            let writes: [(Int, [UInt8])] = [
                (100, [UInt8](repeating: 0xaa, count: 10)),
                (4090, [UInt8](repeating: 0xbb, count: 20)),
                (2 * fixture.manifest.chunkSize - 3, [UInt8](repeating: 0xcc, count: 9000)),
                (image.size - 5, [1, 2, 3, 4, 5]),
            ]
            for (offset, bytes) in writes {
                try await image.write(offset: offset, bytes: bytes)
                expected.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            }
            #expect(try await image.read(offset: 0, length: image.size) == expected)
            try image.flush()
            await #expect(throws: ClientError.self) { try await image.write(offset: image.size - 1, bytes: [1, 2]) }
        }
        // The published image is untouched; a new session over the same overlay sees the writes.
        let fresh = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { fresh.shutdown() }
        let reopened = try await fresh.openDisk(fixture, overlayPath: overlayPath)
        #expect(try await reopened.read(offset: 0, length: reopened.size) == expected)
        let plain = try await fresh.openDisk(fixture)
        #expect(try await plain.read(offset: 0, length: plain.size) == fixture.image)
    }

    @Test func unflushedBitsNeverReachDisk() throws {
        let directory = try TemporaryDirectory()
        let path = directory.sub("overlay")
        let digest = Digest.of(Data("image".utf8))
        let overlay = try CopyOnWriteOverlay(path: path, artifactDigest: digest, size: 64 * 1024)
        try overlay.write([UInt8](repeating: 9, count: 4096), at: 8192, baseBlocks: [:])
        // Before flush the on-disk bitmap does not claim the block: a crash now reads the published bytes.
        let before = FileManager.default.contents(atPath: "\(path).bitmap") ?? Data()
        #expect(before.allSatisfy { $0 == 0 })
        try overlay.flush()
        let after = try #require(FileManager.default.contents(atPath: "\(path).bitmap"))
        #expect(after.first == 0b100)
        // A partial write to a block not yet in the overlay needs its published content.
        #expect(overlay.blocksNeedingBase(offset: 100, count: 10) == [0])
        #expect(throws: ClientError.self) { try overlay.write([1], at: 100, baseBlocks: [:]) }
        #expect(overlay.blocksNeedingBase(offset: 8192 + 5, count: 10).isEmpty)
    }

    @Test func overlayOfAnotherImageIsRefused() throws {
        let directory = try TemporaryDirectory()
        let path = directory.sub("overlay")
        _ = try CopyOnWriteOverlay(path: path, artifactDigest: Digest.of(Data("a".utf8)), size: 8192)
        #expect(throws: ClientError.self) {
            _ = try CopyOnWriteOverlay(path: path, artifactDigest: Digest.of(Data("b".utf8)), size: 8192)
        }
    }

    @Test func removingAnOverlayDeletesEveryFileItMade() throws {
        let directory = try TemporaryDirectory()
        let path = directory.sub("overlay")
        let overlay = try CopyOnWriteOverlay(path: path, artifactDigest: Digest.of(Data("a".utf8)), size: 8192)
        try overlay.write([7], at: 10, baseBlocks: [0: [UInt8](repeating: 0, count: 4096)])
        try overlay.flush()
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["overlay.bitmap", "overlay.data", "overlay.json"])
        CopyOnWriteOverlay.remove(at: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }
}
