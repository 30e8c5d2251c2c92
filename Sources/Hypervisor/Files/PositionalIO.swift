import Glibc

/// The Hypervisor's one pread/pwrite loop: a short count or EINTR is not an error, so every caller
/// (disk backends, the overlay, memory.img) goes through here instead of its own loop.
enum PositionalIO {
    /// Reads until `buffer` is full or the file ends; returns how many bytes were read (fewer than
    /// `buffer.count` only at end of file). `path` names the file in the error.
    @discardableResult
    static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws -> Int {
        var done = 0
        while done < buffer.count {
            let count = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw HypervisorError.system(call: "pread(\(path))", errno: errno) }
            if count == 0 { break }
            done += count
        }
        return done
    }

    /// Writes all of `buffer` at `offset`.
    static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < buffer.count {
            let count = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw HypervisorError.system(call: "pwrite(\(path))", errno: count < 0 ? errno : EIO) }
            done += count
        }
    }
}
