import Foundation

/// Crash-safe file replacement: write a temp file beside the target, fsync it, rename it over the
/// target, fsync the directory. A reader sees the old file or the new one, never a torn one.
public enum AtomicFile {
    /// With `durable: false` the fsyncs are left to the caller, who batches them with `syncFileSystem`
    /// (the publisher writes thousands of chunks; one fsync each would dominate its run time).
    public static func write(_ data: some ContiguousBytes, to path: String, mode: mode_t = 0o644, durable: Bool = true) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try makeDirectories(directory)
        let temp = "\(directory)/.tmp-\((path as NSString).lastPathComponent)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw CatalogError.io(path: temp, errno: errno) }
        var succeeded = false
        defer {
            if !succeeded { unlink(temp) }
        }
        do {
            defer { close(fd) }
            try data.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw CatalogError.io(path: temp, errno: errno)
                    }
                    offset += n
                }
            }
            if durable { guard fsync(fd) == 0 else { throw CatalogError.io(path: temp, errno: errno) } }
        }
        guard rename(temp, path) == 0 else { throw CatalogError.io(path: path, errno: errno) }
        succeeded = true
        if durable { try syncDirectory(directory) }
    }

    /// Flushes every file of the file system holding `path` (syncfs(2)): the durability point for a
    /// batch of non-durable writes.
    public static func syncFileSystem(containing path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CatalogError.io(path: path, errno: errno) }
        defer { close(fd) }
        guard systemSyncFileSystem(fd) == 0 else { throw CatalogError.io(path: path, errno: errno) }
    }

    /// fsync on a directory makes a rename inside it durable.
    public static func syncDirectory(_ directory: String) throws {
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CatalogError.io(path: directory, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw CatalogError.io(path: directory, errno: errno) }
    }

    public static func makeDirectories(_ directory: String) throws {
        guard !directory.isEmpty else { return }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CatalogError.io(path: directory, errno: (error as NSError).code == 0 ? EIO : Int32((error as NSError).code))
        }
    }
}

/// glibc declares syncfs(2) only under _GNU_SOURCE, which Swift's Glibc module does not define.
@_silgen_name("syncfs")
private func systemSyncFileSystem(_ fd: Int32) -> Int32
