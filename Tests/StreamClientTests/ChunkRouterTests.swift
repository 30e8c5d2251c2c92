import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamClient

/// The chunk path: memory → disk cache → origin through one router and one in-flight map, bytes to
/// the reader before the durable write, arrivals pushed to observers, nothing unverified stored.
/// Every store is the real one; the origin is a real HTTP server (`HostilePeer`) on loopback.
@Suite struct ChunkRouterTests {
    private static func isChunk(_ path: String) -> Bool { path.hasPrefix("/chunks/") }

    /// Distinct non-zero chunks of the fixture's disk: (ref, length, bytes).
    private static func chunks(_ fixture: FixtureCatalog) -> [(ref: ChunkRef, length: Int, bytes: [UInt8])] {
        var seen = Set<ChunkID>()
        var result: [(ref: ChunkRef, length: Int, bytes: [UInt8])] = []
        let chunkSize = fixture.manifest.chunkSize
        for (index, ref) in fixture.disk.chunks.enumerated() {
            guard let ref, seen.insert(ref.id).inserted else { continue }
            let length = fixture.manifest.chunkLength(fixture.disk, index: index)
            result.append((ref, length, Array(fixture.image[(index * chunkSize)..<(index * chunkSize + length)])))
        }
        return result
    }

    private static func requests(_ peer: HostilePeer, for chunk: ChunkID) -> Int {
        peer.requestLog.filter { $0 == "/" + CatalogObject.chunk(chunk).path }.count
    }

    /// Polls `condition` (test-side only) until it holds or `seconds` pass.
    private static func eventually(_ seconds: Double = 60, _ condition: () -> Bool) async throws -> Bool {
        let deadline = monotonicSeconds() + seconds
        while !condition() {
            guard monotonicSeconds() < deadline else { return false }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        return true
    }

    @Test func theMemoryStoreKeepsTheMostRecentlyUsedChunksWithinItsBytes() {
        let store = MemoryChunkStore(capacityBytes: 3 * 1024)
        let chunks = (0..<4).map { value -> (id: ChunkID, bytes: [UInt8]) in
            let bytes = [UInt8](repeating: UInt8(value), count: 1024)
            return (Digest.of(bytes), bytes)
        }
        for chunk in chunks.prefix(3) { store.insert(chunk.id, bytes: chunk.bytes) }
        #expect(store.read(chunks[0].id, length: 1024, range: nil) == chunks[0].bytes)
        store.insert(chunks[3].id, bytes: chunks[3].bytes)
        #expect(store.contains(chunks[0].id) && !store.contains(chunks[1].id), "the least recently used chunk left")
        #expect(store.contains(chunks[2].id) && store.contains(chunks[3].id))
        #expect(store.read(chunks[2].id, length: 1024, range: 10..<20) == Array(chunks[2].bytes[10..<20]))
        #expect(store.read(chunks[2].id, length: 999, range: nil) == nil, "a length that does not match is no hit")
        let large = [UInt8](repeating: 9, count: 8192)
        store.insert(Digest.of(large), bytes: large)
        #expect(store.count == 1 && store.contains(Digest.of(large)), "the newest chunk stays even when larger than the store")
    }

    @Test func readsGoToMemoryThenTheDiskCacheThenTheOrigin() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 12)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let router = harness.loader
        let cache = try #require(harness.cache)
        let all = Self.chunks(fixture)
        let (inMemory, onDisk, remote, shadowed) = (all[0], all[1], all[2], all[3])
        router.memory.insert(inMemory.ref.id, bytes: inMemory.bytes)
        try cache.insert(onDisk.ref.id, bytes: onDisk.bytes)
        // In memory and on disk, but the disk copy is damaged: a read that reached the disk would
        // delete it (the cache hashes a file the first time a process reads it).
        router.memory.insert(shadowed.ref.id, bytes: shadowed.bytes)
        try AtomicFile.write([UInt8](repeating: 7, count: shadowed.length), to: cache.path(shadowed.ref.id))
        // A second process's view of the same cache directory: nothing in it is verified yet.
        let fresh = try ChunkCache(root: directory.sub("cache"), capacityBytes: 1 << 30, logger: ClientHarness.logger)
        #expect(fresh.contains(shadowed.ref.id) && fresh.contains(onDisk.ref.id))
        let router2 = ChunkRouter(client: harness.client, cache: fresh, memory: router.memory, localStores: [router.memory, fresh],
                                  origin: OriginChunkStore(client: harness.client))

        let a = try await router2.load(inMemory.ref, length: inMemory.length, dictionary: nil)
        #expect(a.bytes == inMemory.bytes && !a.fetched)
        let s = try await router2.load(shadowed.ref, length: shadowed.length, dictionary: nil)
        #expect(s.bytes == shadowed.bytes && !s.fetched)
        #expect(FileManager.default.fileExists(atPath: fresh.path(shadowed.ref.id)), "memory answered; the disk was not read")

        let b = try await router2.load(onDisk.ref, length: onDisk.length, dictionary: nil)
        #expect(b.bytes == onDisk.bytes && !b.fetched)
        #expect(router.memory.contains(onDisk.ref.id), "a whole chunk read from disk is kept in memory")
        #expect(peer.requestLog.filter(Self.isChunk).isEmpty, "nothing local went to the origin")

        let c = try await router2.load(remote.ref, length: remote.length, dictionary: nil)
        #expect(c.bytes == remote.bytes && c.fetched)
        #expect(Self.requests(peer, for: remote.ref.id) == 1)
        #expect(router.memory.contains(remote.ref.id))
        #expect(try await Self.eventually { fresh.contains(remote.ref.id) && router2.inFlightCount == 0 }, "written back to the disk cache")
        #expect(FileManager.default.contents(atPath: fresh.path(remote.ref.id)).map { [UInt8]($0) } == remote.bytes)
    }

    @Test func aSecondRequestForAChunkInFlightJoinsTheFirst() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 8)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        // Slow bodies keep the first fetch in flight while the others arrive.
        peer.inject(.throttle(bytesPerSecond: 40_000), where: Self.isChunk)
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"), stallTimeout: 5)
        defer { harness.shutdown() }
        let router = harness.loader
        let chunk = Self.chunks(fixture)[1]
        router.prefetch(chunk.ref, length: chunk.length, dictionary: nil, rank: 5)
        // A blocked thread (a fault handler) and eight async readers, all while the prefetch runs.
        let blocking = Task { try await offPool { try router.loadBlocking(chunk.ref, length: chunk.length, dictionary: nil) } }
        let results = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<8 { group.addTask { try await router.load(chunk.ref, length: chunk.length, dictionary: nil).bytes } }
            return try await group.reduce(into: [[UInt8]]()) { $0.append($1) }
        }
        #expect(results.count == 8 && results.allSatisfy { $0 == chunk.bytes })
        #expect(try await blocking.value.bytes == chunk.bytes)
        #expect(router.fetchesStarted == 1)
        #expect(Self.requests(peer, for: chunk.ref.id) == 1)
    }

    /// A local store whose inserts wait for the test to open a gate, in front of the real disk cache:
    /// it holds the durable write open so the test can look at what readers got meanwhile (the wait
    /// blocks the fetch's task, as an fsync would).
    private final class GatedDiskStore: LocalChunkStore, @unchecked Sendable {
        let cache: ChunkCache
        let gate = DispatchSemaphore(value: 0)
        let inserting = DispatchSemaphore(value: 0)
        init(cache: ChunkCache) { self.cache = cache }
        var name: String { "gated disk" }
        var isDurable: Bool { true }
        func contains(_ chunk: ChunkID) -> Bool { cache.contains(chunk) }
        func read(_ chunk: ChunkID, length: Int, range: Range<Int>?) -> [UInt8]? { cache.read(chunk, length: length, range: range) }
        func insert(_ chunk: ChunkID, bytes: [UInt8]) throws {
            inserting.signal()
            gate.wait()
            try cache.insert(chunk, bytes: bytes)
        }
    }

    @Test func readersHaveTheBytesBeforeTheDurableWriteCompletes() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 8)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let cache = try #require(harness.cache)
        let gated = GatedDiskStore(cache: cache)
        let memory = MemoryChunkStore()
        let router = ChunkRouter(client: harness.client, cache: cache, memory: memory, localStores: [memory, gated],
                                 origin: OriginChunkStore(client: harness.client))
        defer { gated.gate.signal() }
        let chunk = Self.chunks(fixture)[2]

        let loaded = try await router.load(chunk.ref, length: chunk.length, dictionary: nil)
        #expect(loaded.bytes == chunk.bytes && loaded.fetched)
        // The write-back has begun and is held: the reader already returned.
        _ = try await offPool { gated.inserting.wait() }
        #expect(!cache.contains(chunk.ref.id), "not durable yet")
        #expect(router.isLocal(chunk.ref.id))
        #expect(router.inFlightCount == 1, "the entry stays until the bytes are durable")
        memory.insert(chunk.ref.id, bytes: [])  // even with memory unusable, the entry still answers
        let again = try await router.load(chunk.ref, length: chunk.length, dictionary: nil)
        #expect(again.bytes == chunk.bytes && !again.fetched)
        #expect(Self.requests(peer, for: chunk.ref.id) == 1)

        gated.gate.signal()
        #expect(try await Self.eventually { router.inFlightCount == 0 })
        #expect(cache.contains(chunk.ref.id))
        #expect(FileManager.default.contents(atPath: cache.path(chunk.ref.id)).map { [UInt8]($0) } == chunk.bytes)
        let shard = (cache.path(chunk.ref.id) as NSString).deletingLastPathComponent
        #expect(try FileManager.default.contentsOfDirectory(atPath: shard).allSatisfy { !$0.hasPrefix(".tmp-") }, "temp file renamed")
    }

    @Test func aCorruptChunkFromAnOriginNeverReachesTheReaderOrTheCache() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 8)
        let bad = try HostilePeer(root: fixture.root)
        defer { bad.stop() }
        bad.inject(.wrongBytes, where: Self.isChunk)
        let chunk = Self.chunks(fixture)[3]

        // Only the corrupting origin: the read fails, and nothing is stored anywhere.
        let alone = try ClientHarness(origins: [bad.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        let aloneCache = try #require(alone.cache)
        await #expect(throws: ClientError.self) { try await alone.loader.load(chunk.ref, length: chunk.length, dictionary: nil) }
        #expect(!alone.loader.isLocal(chunk.ref.id))
        #expect(!alone.loader.memory.contains(chunk.ref.id))
        #expect(!FileManager.default.fileExists(atPath: aloneCache.path(chunk.ref.id)))
        #expect(alone.loader.inFlightCount == 0)
        alone.shutdown()

        // With a good origin behind it, the reader gets the right bytes and so does the cache.
        let good = try HostilePeer(root: fixture.root)
        defer { good.stop() }
        let both = try ClientHarness(origins: [bad.url, good.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { both.shutdown() }
        let loaded = try await both.loader.load(chunk.ref, length: chunk.length, dictionary: nil)
        #expect(loaded.bytes == chunk.bytes)
        #expect(Self.requests(bad, for: chunk.ref.id) >= 2 && Self.requests(good, for: chunk.ref.id) == 1)
        let cache = try #require(both.cache)
        #expect(try await Self.eventually { cache.contains(chunk.ref.id) })
        #expect(FileManager.default.contents(atPath: cache.path(chunk.ref.id)).map { Digest.of($0) } == chunk.ref.id)
    }

    @Test func chunksThatArriveArePushedToObservers() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkCount: 12)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: directory.sub("cache"))
        defer { harness.shutdown() }
        let image = try await harness.openDisk(fixture)
        let arrived = ArrivalLog()
        let observation = image.observeArrivals { index in
            // Told after the chunk became local: a reader told now finds it.
            arrived.set(index, localWhenTold: image.isLocal(chunk: index))
        }
        let index = try #require(fixture.disk.chunks.indices.first { fixture.disk.chunks[$0] != nil })
        image.prefetch(chunk: index, rank: 0)
        #expect(try await Self.eventually { arrived[index] != nil })
        #expect(arrived[index] == true)
        harness.loader.stopObserving(observation)
        let other = try #require(fixture.disk.chunks.indices.last { fixture.disk.chunks[$0] != nil && fixture.disk.chunks[$0] != fixture.disk.chunks[index] })
        _ = try await image.read(offset: other * fixture.manifest.chunkSize, length: 1)
        #expect(arrived[other] == nil, "a stopped observation hears nothing")
    }
}

/// Chunk indices an observer heard of, and whether each was local when it was told.
private final class ArrivalLog: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [Int: Bool] = [:]
    func set(_ index: Int, localWhenTold: Bool) { lock.withLock { seen[index] = localWhenTold } }
    subscript(index: Int) -> Bool? { lock.withLock { seen[index] } }
}
