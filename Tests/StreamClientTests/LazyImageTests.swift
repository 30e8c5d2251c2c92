import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamClient

@Suite struct LazyImageTests {
    private static func isChunk(_ path: String) -> Bool { path.hasPrefix("/chunks/") }

    @Test func randomReadsEqualTheOriginal() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 40)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        var generator = SeededGenerator(seed: 42)
        for _ in 0..<300 {
            let offset = Int.random(in: 0..<image.size, using: &generator)
            let length = Int.random(in: 0...min(3 * fixture.manifest.chunkSize, image.size - offset), using: &generator)
            #expect(try await image.read(offset: offset, length: length) == Array(fixture.image[offset..<(offset + length)]))
        }
        // Each distinct chunk crossed the network at most once; everything after came from the cache.
        let chunkRequests = peer.requestLog.filter(Self.isChunk)
        #expect(chunkRequests.count == Set(chunkRequests).count)
        await #expect(throws: ClientError.self) { try await image.read(offset: image.size - 1, length: 2) }
        await #expect(throws: ClientError.self) { try await image.read(offset: -1, length: 1) }
    }

    @Test func zeroChunksNeedNoFetchAndConcurrentReadersShareOneFetch() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        // Slow bodies keep the first fetch in flight while the other readers arrive.
        peer.inject(.throttle(bytesPerSecond: 20_000), where: Self.isChunk)
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"), stallTimeout: 5)
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        let chunkSize = fixture.manifest.chunkSize
        let zero = try #require(fixture.zeroChunkIndices.first)
        #expect(try await image.read(offset: zero * chunkSize, length: chunkSize) == [UInt8](repeating: 0, count: chunkSize))
        #expect(peer.requestLog.filter(Self.isChunk).isEmpty)

        let index = try #require(fixture.disk.chunks.firstIndex { $0 != nil })
        let results = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for reader in 0..<16 {
                group.addTask { try await image.read(offset: index * chunkSize + reader * 100, length: 100) }
            }
            return try await group.reduce(into: [[UInt8]]()) { $0.append($1) }
        }
        #expect(results.count == 16)
        #expect(results.allSatisfy { $0.count == 100 })
        #expect(peer.requestLog.filter(Self.isChunk).count == 1)
    }

    @Test func firstAccessesAreTracedOncePerChunk() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 20)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let sink = RecordingTraceSink()
        let image = try await harness.openDisk(fixture, traceSink: sink)
        let chunkSize = fixture.manifest.chunkSize
        _ = try await image.read(offset: 3 * chunkSize + 10, length: 10)
        _ = try await image.read(offset: 3 * chunkSize + 20, length: 10)
        _ = try await image.read(offset: 2 * chunkSize, length: 2 * chunkSize)
        let accesses = sink.accesses
        #expect(accesses.map(\.chunkIndex) == [3, 2])
        let three = try #require(accesses.first { $0.chunkIndex == 3 })
        #expect(three.offset == 3 * chunkSize + 10)
        #expect(three.source == .fetched)
        #expect(three.chunk == fixture.disk.chunks[3]?.id)
        let two = try #require(accesses.first { $0.chunkIndex == 2 })
        #expect(two.source == .zero)
        #expect(two.chunk == nil)
        #expect(three.seconds >= 0)
    }

    @Test func prefetchFillsTheCacheAndDemandJoinsIt() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 30)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        for index in 0..<fixture.disk.chunks.count { image.prefetch(chunk: index, rank: Double(index)) }
        // A demand read while prefetch is running returns correct bytes.
        let last = fixture.disk.chunks.count - 1
        let offset = last * fixture.manifest.chunkSize
        #expect(try await image.read(offset: offset, length: image.size - offset) == Array(fixture.image[offset...]))
        var waited = 0
        while !(0..<fixture.disk.chunks.count).allSatisfy({ image.isLocal(chunk: $0) }), waited < 500 {
            try await Task.sleep(nanoseconds: 10_000_000)
            waited += 1
        }
        #expect((0..<fixture.disk.chunks.count).allSatisfy { image.isLocal(chunk: $0) })
        let chunkRequests = peer.requestLog.filter(Self.isChunk)
        #expect(chunkRequests.count == Set(chunkRequests).count)
    }

    /// A chunk the cache cannot store (here: a directory squats on its path) is still returned,
    /// verified; the read does not fail because of the cache.
    @Test func aChunkTheCacheCannotStoreIsStillReturned() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 4)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let cache = try #require(harness.cache)
        let index = try #require(fixture.disk.chunks.indices.first { fixture.disk.chunks[$0] != nil })
        let chunk = try #require(fixture.disk.chunks[index]).id
        try FileManager.default.createDirectory(atPath: cache.path(chunk), withIntermediateDirectories: true)
        let image = try await harness.openDisk(fixture)
        let offset = index * fixture.manifest.chunkSize
        let length = min(fixture.manifest.chunkSize, image.size - offset)
        #expect(try await image.read(offset: offset, length: length) == Array(fixture.image[offset..<(offset + length)]))
        #expect(!cache.contains(chunk))
    }
}
