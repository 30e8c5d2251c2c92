import Foundation
import Glibc

/// The Hypervisor's one durable-write helper (it must not import Catalog's): a temporary file beside
/// the target, filled, fsynced and renamed over it, so a reader or a crash sees the old file or the
/// whole new one, never a part.
enum AtomicFile {
    /// Writes `data` to `path`.
    static func write(_ data: Data, to path: String) throws {
        try write(to: path) { fd, temporary in
            try data.withUnsafeBytes { try PositionalIO.write(fd, from: $0, at: 0, path: temporary) }
        }
    }

    /// Creates a temporary file, lets `fill` write it (by descriptor; the temporary path is for
    /// error messages), then fsyncs it and renames it to `path`. On any failure the temporary file
    /// is removed and `path` is left as it was.
    static func write(to path: String, fill: (Int32, String) throws -> Void) throws {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HypervisorError.ioFailed("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var renamed = false
        defer {
            close(fd)
            if !renamed { unlink(temporary) }
        }
        try fill(fd, temporary)
        guard fsync(fd) == 0 else { throw HypervisorError.ioFailed("cannot flush \(temporary): \(String(cString: strerror(errno)))") }
        guard rename(temporary, path) == 0 else {
            throw HypervisorError.ioFailed("cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))")
        }
        renamed = true
    }
}
