import Catalog
import Foundation
import Logging

/// The host's persistent chunk cache, shared by all appliances, catalogues and processes: chunk
/// bytes (decompressed, so a cached read is one `pread`) at `chunks/<h2>/<sha256>`, named by content.
///
/// Crash safety: chunks are written with `AtomicFile` (temp, fsync, rename, fsync directory), so a
/// chunk file is complete or absent. A file is still hashed the first time this process reads it,
/// because the cache directory is outside the signed chain (disk errors, other users, old bugs).
///
/// Size: bounded by `capacityBytes`; inserting past it evicts least-recently-used chunks down to
/// `lowWatermark` of the capacity, skipping every chunk a live `CachePin` holds. The use time is the
/// file's mtime (touched at most once a minute per chunk), so the LRU order survives restarts and is
/// shared between processes. Each process keeps its own size tally, rebuilt by a scan at open; `gc`
/// rescans.
public final class ChunkCache: @unchecked Sendable {
    public let root: String
    public let capacityBytes: Int
    /// Eviction stops below this fraction of the capacity, so inserts do not evict one chunk at a time.
    static let lowWatermark = 0.9
    /// The on-disk use time is refreshed at most this often per chunk (one `futimens` per minute).
    static let touchIntervalSeconds = 60.0

    private struct Entry {
        var size: Int
        var lastUse: Double
    }

    private let logger: Logger
    private let lock = NSLock()
    private var entries: [ChunkID: Entry] = [:]
    private var totalBytes = 0
    private var verified: Set<ChunkID> = []

    public var chunksDirectory: String { "\(root)/chunks" }
    public var pinsDirectory: String { "\(root)/pins" }

    public init(root: String, capacityBytes: Int, logger: Logger) throws {
        self.root = (root as NSString).standardizingPath
        self.capacityBytes = capacityBytes
        self.logger = logger
        try AtomicFile.makeDirectories(chunksDirectory)
        try AtomicFile.makeDirectories(pinsDirectory)
        scan()
    }

    func path(_ chunk: ChunkID) -> String {
        let hex = chunk.hex
        return "\(chunksDirectory)/\(hex.prefix(2))/\(hex)"
    }

    /// Rebuilds the in-memory index from the directory.
    private func scan() {
        var found: [ChunkID: Entry] = [:]
        var total = 0
        forEachChunkFile { chunk, path in
            var info = stat()
            guard stat(path, &info) == 0 else { return }
            let size = Int(info.st_size)
            found[chunk] = Entry(size: size, lastUse: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
            total += size
        }
        lock.lock()
        entries = found
        totalBytes = total
        lock.unlock()
    }

    private func forEachChunkFile(_ body: (ChunkID, String) -> Void) {
        let manager = FileManager.default
        guard let shards = try? manager.contentsOfDirectory(atPath: chunksDirectory) else { return }
        for shard in shards where shard.count == 2 {
            let directory = "\(chunksDirectory)/\(shard)"
            guard let names = try? manager.contentsOfDirectory(atPath: directory) else { continue }
            for name in names {
                guard let chunk = try? ChunkID(hex: name), name.hasPrefix(shard) else { continue }
                body(chunk, "\(directory)/\(name)")
            }
        }
    }

    public func contains(_ chunk: ChunkID) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return entries[chunk] != nil
    }

    /// Reads `range` of a cached chunk whose full length is `length`, or returns nil when the chunk is
    /// absent or damaged (a damaged file is deleted so the caller refetches it).
    public func read(_ chunk: ChunkID, length: Int, range: Range<Int>? = nil) -> [UInt8]? {
        let range = range ?? 0..<length
        guard range.lowerBound >= 0, range.upperBound <= length else { return nil }
        lock.lock()
        let known = entries[chunk]
        let isVerified = verified.contains(chunk)
        lock.unlock()
        let path = self.path(chunk)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if known != nil { forget(chunk) }
            return nil
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, Int(info.st_size) == length else {
            // Either the file is damaged or the caller's length is wrong (a chunk's length follows
            // from its content); only a file that fails its hash is deleted.
            if !isVerified, let data = FileManager.default.contents(atPath: path), Digest.of(data) != chunk {
                discard(chunk, reason: "has \(info.st_size) bytes and does not match its name")
            }
            return nil
        }
        let readRange = isVerified ? range : 0..<length
        var buffer = [UInt8](repeating: 0, count: readRange.count)
        let complete = buffer.withUnsafeMutableBytes { preadFully(fd, $0, offset: readRange.lowerBound) }
        guard complete else { return nil }
        let now = Date().timeIntervalSince1970
        if !isVerified {
            let actual = Digest.of(buffer)
            guard actual == chunk else {
                discard(chunk, reason: "content hashes to \(actual.short)")
                return nil
            }
        }
        lock.lock()
        if !isVerified { verified.insert(chunk) }
        if entries[chunk] == nil {
            entries[chunk] = Entry(size: length, lastUse: now)
            totalBytes += length
        }
        let stale = now - (entries[chunk]?.lastUse ?? 0) > Self.touchIntervalSeconds
        if stale { entries[chunk]?.lastUse = now }
        lock.unlock()
        if stale { futimens(fd, nil) }
        if isVerified { return buffer }
        return Array(buffer[range])
    }

    /// Stores verified chunk bytes (the caller has checked them against `chunk`).
    public func insert(_ chunk: ChunkID, bytes: [UInt8]) throws {
        if contains(chunk) { return }
        do {
            try AtomicFile.write(bytes, to: path(chunk))
        } catch {
            throw ClientError.cache(path: path(chunk), problem: "\(error)")
        }
        lock.lock()
        if entries[chunk] == nil {
            entries[chunk] = Entry(size: bytes.count, lastUse: Date().timeIntervalSince1970)
            totalBytes += bytes.count
        }
        verified.insert(chunk)
        let over = totalBytes > capacityBytes
        lock.unlock()
        if over { evict(downTo: Int(Double(capacityBytes) * Self.lowWatermark)) }
    }

    /// Pins chunks for a running appliance (see `CachePin`).
    public func pin(owner: String) throws -> CachePin {
        try CachePin(directory: pinsDirectory, owner: owner)
    }

    /// Deletes least-recently-used unpinned chunks until the cache holds at most `target` bytes.
    @discardableResult
    public func evict(downTo target: Int) -> (removedChunks: Int, removedBytes: Int) {
        let pinned = CachePin.livePins(in: pinsDirectory).chunks
        lock.lock()
        guard totalBytes > target else { lock.unlock(); return (0, 0) }
        let candidates = entries.filter { !pinned.contains($0.key) }.sorted { $0.value.lastUse < $1.value.lastUse }
        var victims: [ChunkID] = []
        var projected = totalBytes
        for (chunk, entry) in candidates where projected > target {
            victims.append(chunk)
            projected -= entry.size
        }
        lock.unlock()
        var removedBytes = 0
        for chunk in victims {
            unlink(path(chunk))
            removedBytes += forget(chunk)
        }
        if projected > target {
            logger.warning("chunk cache is over capacity because pinned chunks fill it",
                           metadata: ["bytes": "\(projected)", "capacity": "\(capacityBytes)"])
        }
        return (victims.count, removedBytes)
    }

    @discardableResult
    private func forget(_ chunk: ChunkID) -> Int {
        lock.lock()
        defer { lock.unlock() }
        verified.remove(chunk)
        guard let entry = entries.removeValue(forKey: chunk) else { return 0 }
        totalBytes -= entry.size
        return entry.size
    }

    private func discard(_ chunk: ChunkID, reason: String) {
        logger.warning("deleting damaged cached chunk", metadata: ["chunk": "\(chunk.short)", "reason": "\(reason)"])
        unlink(path(chunk))
        forget(chunk)
    }

    // MARK: maintenance (`streamvm cache stats|gc|verify`)

    public struct Statistics: Sendable, Codable {
        public var chunks: Int
        public var bytes: Int
        public var capacityBytes: Int
        public var pinnedChunks: Int
        public var pinnedBytes: Int
        public var liveOwners: Int
    }

    public func statistics() -> Statistics {
        scan()
        let pins = CachePin.livePins(in: pinsDirectory)
        lock.lock()
        defer { lock.unlock() }
        let pinnedPresent = pins.chunks.compactMap { entries[$0] }
        return Statistics(chunks: entries.count, bytes: totalBytes, capacityBytes: capacityBytes,
                          pinnedChunks: pinnedPresent.count, pinnedBytes: pinnedPresent.reduce(0) { $0 + $1.size },
                          liveOwners: pins.owners)
    }

    public struct CollectionReport: Sendable, Codable {
        public var removedChunks: Int
        public var removedBytes: Int
        public var removedTempFiles: Int
        public var removedStalePins: Int
    }

    /// Removes leftovers of crashed writers and evicts down to the capacity.
    public func collectGarbage() -> CollectionReport {
        let temps = removeAbandonedTempFiles()
        let stale = CachePin.livePins(in: pinsDirectory).staleRemoved
        scan()
        let evicted = evict(downTo: capacityBytes)
        return CollectionReport(removedChunks: evicted.removedChunks, removedBytes: evicted.removedBytes,
                                removedTempFiles: temps, removedStalePins: stale)
    }

    /// `AtomicFile` temp files whose writer process no longer exists.
    private func removeAbandonedTempFiles() -> Int {
        var removed = 0
        var directories = [pinsDirectory]
        if let shards = try? FileManager.default.contentsOfDirectory(atPath: chunksDirectory) {
            directories += shards.map { "\(chunksDirectory)/\($0)" }
        }
        for directory in directories {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { continue }
            for name in names where TempFileName.isAbandoned(name) {
                if unlink("\(directory)/\(name)") == 0 { removed += 1 }
            }
        }
        return removed
    }

    public struct VerificationReport: Sendable, Codable {
        public var checked: Int
        public var damagedRemoved: Int
    }

    /// Hashes every cached chunk and deletes the ones whose content does not match their name.
    public func verifyAll() -> VerificationReport {
        var checked = 0, damaged = 0
        forEachChunkFile { chunk, path in
            checked += 1
            guard let data = FileManager.default.contents(atPath: path), Digest.of(data) == chunk else {
                unlink(path)
                forget(chunk)
                damaged += 1
                return
            }
            lock.lock()
            verified.insert(chunk)
            lock.unlock()
        }
        return VerificationReport(checked: checked, damagedRemoved: damaged)
    }
}

/// `AtomicFile` names temp files `.tmp-<name>-<pid>-<random>`; one whose pid is gone is garbage.
enum TempFileName {
    static func isAbandoned(_ name: String) -> Bool {
        guard name.hasPrefix(".tmp-") else { return false }
        let fields = name.split(separator: "-")
        guard fields.count >= 4, let pid = Int32(fields[fields.count - 2]) else { return false }
        return kill(pid, 0) != 0 && errno == ESRCH
    }
}

/// Reads exactly `buffer.count` bytes at `offset`; false on error or end of file.
func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int) -> Bool {
    var done = 0
    while done < buffer.count {
        let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return false }
        done += n
    }
    return true
}
