import Glibc

/// StreamClient's one pwrite loop (its pread counterpart, `preadFully`, is in ChunkCache.swift): a
/// short count or EINTR is not an error; a failure names the file.
func pwriteFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: Int, path: String) throws {
    var done = 0
    while done < buffer.count {
        let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
        if n < 0 {
            if errno == EINTR { continue }
            throw ClientError.io(path: path, errno: errno)
        }
        done += n
    }
}
