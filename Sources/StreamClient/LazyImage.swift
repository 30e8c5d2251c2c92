import Catalog
import Foundation

/// A block-device-like view of one artifact of an appliance (its disk, memory snapshot, kernel…)
/// whose bytes arrive on demand. `read` returns verified, decompressed bytes: zero chunks cost
/// nothing, chunks in memory a lookup, cached chunks one `pread`, missing chunks a fetch at demand
/// priority, all through the `ChunkRouter`. The image is
/// read-only: a guest's writes go to the Hypervisor's `CopyOnWriteOverlay`, which StreamBoot layers
/// over it, so the published image is never modified. Every chunk's first access is reported to the
/// trace sink, here and nowhere else (disk reads, memory faults and memory installed ahead of the guest alike).
public final class LazyImage: @unchecked Sendable {
    public let manifest: Manifest
    public let artifact: Artifact
    public let loader: ChunkRouter
    public var size: Int { artifact.size }
    public var chunkSize: Int { manifest.chunkSize }

    private let dictionaries: [ZstdDictionary]
    private let traceSink: (any AccessTraceSink)?
    private let pin: CachePin?
    private let openedAt = monotonicSeconds()
    private let lock = NSLock()
    private var touched: [UInt64]

    /// Opens `role` of `manifest`. Fetches the manifest's dictionaries, and pins the artifact's chunks
    /// in the cache so that eviction never removes the running appliance's working set.
    public static func open(manifest: Manifest, role: ArtifactRole, loader: ChunkRouter,
                            traceSink: (any AccessTraceSink)? = nil) async throws -> LazyImage {
        guard let artifact = manifest.artifact(role) else { throw ClientError.noArtifact(role.rawValue) }
        let dictionaries = try await loader.client.loadDictionaries(for: manifest)
        var pin: CachePin?
        if let cache = loader.cache {
            pin = try cache.pin(owner: "\(manifest.config.name)-\(role.rawValue)")
            try pin?.add(artifact.chunks.compactMap { $0?.id })
        }
        return LazyImage(manifest: manifest, artifact: artifact, loader: loader, dictionaries: dictionaries,
                         traceSink: traceSink, pin: pin)
    }

    init(manifest: Manifest, artifact: Artifact, loader: ChunkRouter, dictionaries: [ZstdDictionary],
         traceSink: (any AccessTraceSink)?, pin: CachePin?) {
        self.manifest = manifest
        self.artifact = artifact
        self.loader = loader
        self.dictionaries = dictionaries
        self.traceSink = traceSink
        self.pin = pin
        touched = [UInt64](repeating: 0, count: (artifact.chunks.count + 63) / 64)
    }

    deinit {
        pin?.release()
    }

    private func dictionary(for ref: ChunkRef) -> ZstdDictionary? {
        ref.dict.map { dictionaries[$0] }
    }

    /// `length` bytes at `offset`, verified.
    public func read(offset: Int, length: Int) async throws -> [UInt8] {
        guard offset >= 0, length >= 0, offset <= size, length <= size - offset else {
            throw ClientError.outOfRange(offset: offset, length: length, size: size)
        }
        guard length > 0 else { return [] }
        let range = offset..<(offset + length)
        var output = [UInt8](repeating: 0, count: length)
        let first = offset / chunkSize, last = (range.upperBound - 1) / chunkSize
        if first == last {
            if let slice = try await baseSlice(chunk: first, range: range) { output = slice }
        } else {
            try await withThrowingTaskGroup(of: (Int, [UInt8]?).self) { group in
                for index in first...last {
                    let chunkRange = max(range.lowerBound, index * chunkSize)..<min(range.upperBound, (index + 1) * chunkSize)
                    group.addTask { (chunkRange.lowerBound, try await self.baseSlice(chunk: index, range: chunkRange)) }
                }
                for try await (start, slice) in group {
                    guard let slice else { continue }
                    output.replaceSubrange((start - offset)..<(start - offset + slice.count), with: slice)
                }
            }
        }
        return output
    }

    /// Published bytes of `range` (inside chunk `index`); nil means all zero.
    private func baseSlice(chunk index: Int, range: Range<Int>) async throws -> [UInt8]? {
        let chunkStart = index * chunkSize
        let local = (range.lowerBound - chunkStart)..<(range.upperBound - chunkStart)
        guard let ref = artifact.chunks[index] else {
            noteAccess(index, chunk: nil, offset: range.lowerBound, source: .zero, stall: 0)
            return nil
        }
        let length = manifest.chunkLength(artifact, index: index)
        if let cached = loader.readLocal(ref.id, length: length, range: local) {
            noteAccess(index, chunk: ref.id, offset: range.lowerBound, source: .cache, stall: 0)
            return cached
        }
        let started = monotonicSeconds()
        let loaded = try await loader.load(ref, length: length, dictionary: dictionary(for: ref), priority: .demand)
        noteAccess(index, chunk: ref.id, offset: range.lowerBound, source: loaded.fetched ? .fetched : .cache,
                   stall: loaded.fetched ? monotonicSeconds() - started : 0)
        // A whole-chunk read shares the router's bytes (no copy).
        return local == 0..<length ? loaded.bytes : Array(loaded.bytes[local])
    }

    /// The published bytes of chunk `index` (all of them: guest memory, say), for a thread that must
    /// answer synchronously: local chunks
    /// are read on the calling thread, a miss blocks it on the router's fetch (at demand priority).
    /// With `touchedAt`, the chunk's first access is traced at that offset.
    public func publishedChunkBlocking(_ index: Int, touchedAt offset: Int?) throws -> [UInt8] {
        guard index >= 0, index < artifact.chunks.count else {
            throw ClientError.outOfRange(offset: index * chunkSize, length: chunkSize, size: size)
        }
        let length = manifest.chunkLength(artifact, index: index)
        guard let ref = artifact.chunks[index] else {
            if let offset { noteAccess(index, chunk: nil, offset: offset, source: .zero, stall: 0) }
            return [UInt8](repeating: 0, count: length)
        }
        let started = monotonicSeconds()
        let loaded = try loader.loadBlocking(ref, length: length, dictionary: dictionary(for: ref))
        if let offset {
            noteAccess(index, chunk: ref.id, offset: offset, source: loaded.fetched ? .fetched : .cache,
                       stall: loaded.fetched ? monotonicSeconds() - started : 0)
        }
        return loaded.bytes
    }

    /// Traces chunk `index` as put in place ahead of the reader (memory installed before the guest
    /// touched it), as a chunk read from the cache, unless its first access was already traced.
    public func noteInstalled(chunk index: Int) {
        guard index >= 0, index < artifact.chunks.count else { return }
        noteAccess(index, chunk: artifact.chunks[index]?.id, offset: index * chunkSize,
                   source: artifact.chunks[index] == nil ? .zero : .cache, stall: 0, installed: true)
    }

    private func noteAccess(_ index: Int, chunk: ChunkID?, offset: Int, source: AccessSource, stall: Double, installed: Bool = false) {
        guard let traceSink else { return }
        lock.lock()
        let bit = UInt64(1) << UInt64(index & 63)
        let first = touched[index >> 6] & bit == 0
        touched[index >> 6] |= bit
        lock.unlock()
        guard first else { return }
        let access = FirstAccess(role: artifact.role, chunkIndex: index, chunk: chunk, offset: offset,
                                 seconds: monotonicSeconds() - openedAt, source: source, stallSeconds: stall)
        if installed { traceSink.recordInstalled(access) } else { traceSink.record(access) }
    }

    // MARK: prefetch hooks

    public func chunkRef(_ index: Int) -> ChunkRef? { artifact.chunks[index] }

    /// Whether chunk `index` can be read without the network.
    public func isLocal(chunk index: Int) -> Bool {
        guard let ref = artifact.chunks[index] else { return true }
        return loader.isLocal(ref.id)
    }

    /// Queues chunk `index` for background fetching at `rank` (lower is sooner).
    public func prefetch(chunk index: Int, rank: Double) {
        guard let ref = artifact.chunks[index] else { return }
        loader.prefetch(ref, length: manifest.chunkLength(artifact, index: index), dictionary: dictionary(for: ref), rank: rank)
    }

    public func cancelPrefetch(chunk index: Int) {
        guard let ref = artifact.chunks[index] else { return }
        loader.cancelPrefetch(ref.id)
    }

    /// Calls `body` with the index of each chunk of this image that becomes local by a fetch (every
    /// index, when the manifest uses one chunk at several places). Stop with `loader.stopObserving`.
    public func observeArrivals(_ body: @escaping @Sendable (Int) -> Void) -> ChunkRouter.Observation {
        var indices: [ChunkID: [Int]] = [:]
        for (index, ref) in artifact.chunks.enumerated() { if let ref { indices[ref.id, default: []].append(index) } }
        let byChunk = indices
        return loader.observeArrivals { chunk in byChunk[chunk]?.forEach(body) }
    }
}
