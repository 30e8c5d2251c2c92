import Foundation
import NIOCore

/// Reads catalogue files with plain blocking system calls. Every function here blocks, so callers
/// run them on a thread pool, never on an event loop or the cooperative pool's hot path.
enum ObjectFileReader {
    enum Outcome {
        case read(ByteBuffer, FileIdentity)
        case missing
        /// The file changed while it was being read; the caller may retry.
        case changed
    }

    /// Reads a whole regular file and the identity of exactly the bytes read: `fstat` before and after
    /// the read on the same descriptor must agree, so the bytes and the identity belong together.
    static func readWhole(path: String, limit: Int, allocator: ByteBufferAllocator) throws -> Outcome {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT || errno == ELOOP || errno == ENOTDIR { return .missing }
            throw ServerError.io(path: path, errno: errno)
        }
        defer { close(fd) }
        guard let before = FileIdentity.of(descriptor: fd) else { return .missing }
        guard before.size <= limit else { throw ServerError.objectTooLarge(path: path, size: before.size, limit: limit) }
        var buffer = allocator.buffer(capacity: before.size)
        let count = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: before.size) { target in
            try readFully(fd: fd, into: UnsafeMutableRawBufferPointer(rebasing: target.prefix(before.size)), offset: 0, path: path)
        }
        guard count == before.size, FileIdentity.of(descriptor: fd) == before else { return .changed }
        return .read(buffer, before)
    }

    /// Reads `length` bytes at `offset` from a file that must still have identity `expected`.
    static func readRange(path: String, offset: Int, length: Int, expected: FileIdentity,
                          allocator: ByteBufferAllocator) throws -> ByteBuffer? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard FileIdentity.of(descriptor: fd) == expected else { return nil }
        var buffer = allocator.buffer(capacity: length)
        let count = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target in
            try readFully(fd: fd, into: UnsafeMutableRawBufferPointer(rebasing: target.prefix(length)), offset: offset, path: path)
        }
        return count == length ? buffer : nil
    }

    /// pread until `target` is full or the file ends; returns the bytes read.
    private static func readFully(fd: Int32, into target: UnsafeMutableRawBufferPointer, offset: Int, path: String) throws -> Int {
        var done = 0
        while done < target.count {
            let n = pread(fd, target.baseAddress! + done, target.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ServerError.io(path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
