import Foundation
import Glibc

/// File-system steps around the control socket: refuse to replace anything but a stale socket,
/// bind in a private directory, publish with 0600 by rename, remove only our own socket.
enum UnixSocketPath {
    /// sun_path holds 108 bytes with its terminating NUL (unix(7)); the staging name is longer.
    static let maximumPathBytes = 107

    static func refuseLiveOrForeign(_ path: String) throws {
        guard !path.isEmpty else { throw ControlAPIStartError("--api-socket needs a path") }
        let staging = (path as NSString).deletingLastPathComponent + "/.streamvm-api-XXXXXX/api.sock"
        guard staging.utf8.count <= maximumPathBytes else {
            throw ControlAPIStartError("\(path): too long for a Unix socket (keep it under \(maximumPathBytes - 24) bytes)")
        }
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw ControlAPIStartError("\(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw ControlAPIStartError("\(path) exists and is not a socket; refusing to replace it")
        }
        if accepts(path) {
            throw ControlAPIStartError("\(path): another process is serving a control API there (stop it, or choose another --api-socket)")
        }
    }

    /// A 0700 directory in the socket's own directory (so the final rename stays on one file system).
    static func privateStagingDirectory(beside path: String) throws -> String {
        let parent = (path as NSString).deletingLastPathComponent
        var template = Array(((parent.isEmpty ? "." : parent) + "/.streamvm-api-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ControlAPIStartError("cannot create a directory beside \(path): \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    /// Makes the bound socket 0600 and renames it to `path`; returns its inode (to remove only ours later).
    static func publish(bound: String, at path: String, staging: String) throws -> UInt64 {
        defer { removeStaging(staging) }
        guard chmod(bound, 0o600) == 0 else { throw ControlAPIStartError("cannot restrict \(bound): \(String(cString: strerror(errno)))") }
        // Checked once more: a live VMM may have taken the path while this one was starting.
        try refuseLiveOrForeign(path)
        guard rename(bound, path) == 0 else { throw ControlAPIStartError("cannot place the socket at \(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard lstat(path, &info) == 0 else { throw ControlAPIStartError("\(path): \(String(cString: strerror(errno)))") }
        return UInt64(info.st_ino)
    }

    static func removeStaging(_ staging: String) {
        unlink(staging + "/api.sock")
        rmdir(staging)
    }

    static func removeIfOurs(_ path: String, inode: UInt64) {
        var info = stat()
        if lstat(path, &info) == 0, UInt64(info.st_ino) == inode { unlink(path) }
    }

    /// Whether something accepts connections on the socket at `path`.
    static func accepts(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8.prefix(maximumPathBytes))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) == 0 }
        }
    }
}
