import Foundation
import Glibc

/// Reads a whole small file with a size limit, so a hostile or damaged file cannot exhaust memory.
struct FileHandleReader {
    let path: String
    let fd: Int32

    init?(path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        self.path = path
        self.fd = fd
    }

    func readAll(limit: Int) throws -> Data {
        defer { close(fd) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw HypervisorError.invalidSnapshot("cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { return data }
            data.append(contentsOf: buffer[0..<count])
            guard data.count <= limit else { throw HypervisorError.invalidSnapshot("\(path) is larger than \(limit) bytes") }
        }
    }
}
