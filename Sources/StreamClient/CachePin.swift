import Catalog
import Foundation

/// Chunks a running appliance needs, protected from eviction by every process sharing the cache.
/// The pin is a file under `pins/` that its owner holds an exclusive `flock` on and only appends
/// whole 32-byte digests to, so another process can always read a consistent prefix; when the owner
/// dies the kernel drops the lock and the next eviction or `cache gc` deletes the stale pin.
public final class CachePin: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var fd: Int32
    private var pinned: Set<ChunkID> = []

    init(directory: String, owner: String) throws {
        let safeOwner = String(owner.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) ? Character($0) : "_" }.prefix(40))
        path = "\(directory)/\(safeOwner)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).pin"
        try AtomicFile.makeDirectories(directory)
        // Lock under a name `livePins` ignores, then rename: a pin is never visible unlocked.
        let temp = "\(directory)/.tmp-\(safeOwner)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ClientError.io(path: temp, errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0, rename(temp, path) == 0 else {
            let error = errno
            close(fd)
            unlink(temp)
            throw ClientError.io(path: path, errno: error)
        }
    }

    deinit { release() }

    /// Adds chunks to the pin (already pinned ones are skipped).
    public func add(_ chunks: some Sequence<ChunkID>) throws {
        lock.lock()
        defer { lock.unlock() }
        guard fd >= 0 else { return }
        var record: [UInt8] = []
        for chunk in chunks where pinned.insert(chunk).inserted { record += chunk.bytes }
        guard !record.isEmpty else { return }
        try record.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ClientError.io(path: path, errno: errno)
                }
                offset += n
            }
        }
    }

    public func contains(_ chunk: ChunkID) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return pinned.contains(chunk)
    }

    /// Drops the pin; its chunks become evictable (unless another pin holds them).
    public func release() {
        lock.lock()
        defer { lock.unlock() }
        guard fd >= 0 else { return }
        unlink(path)
        close(fd)
        fd = -1
    }

    /// Every chunk pinned by a live owner in `directory`; stale pins (owner gone) are deleted.
    static func livePins(in directory: String) -> (chunks: Set<ChunkID>, owners: Int, staleRemoved: Int) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return ([], 0, 0) }
        var chunks = Set<ChunkID>()
        var owners = 0, stale = 0
        for name in names where name.hasSuffix(".pin") {
            let path = "\(directory)/\(name)"
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if flock(fd, LOCK_SH | LOCK_NB) == 0 {
                // Nobody holds the exclusive lock: the owner has exited or crashed.
                unlink(path)
                stale += 1
                continue
            }
            owners += 1
            guard let data = try? FileHandle(fileDescriptor: fd, closeOnDealloc: false).readToEnd() else { continue }
            let whole = data.count / Digest.byteCount * Digest.byteCount
            var offset = 0
            while offset < whole {
                chunks.insert(Digest(bytes: data[data.startIndex + offset ..< data.startIndex + offset + Digest.byteCount]))
                offset += Digest.byteCount
            }
        }
        return (chunks, owners, stale)
    }
}
