import Foundation
@testable import StreamServer

/// A blocking TCP client socket for scripted misbehaviour (idle, trickling, endless or vanishing
/// clients), optionally from another loopback source address so that per-address caps can be told
/// apart from the total cap.
struct RawSocket: Sendable {
    let fd: Int32

    /// Connects to the server on 127.0.0.1; `from` binds the client's end first (e.g. "127.0.0.2").
    static func connect(port: Int, from source: String? = nil) -> RawSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket failed: \(errno)")
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            precondition(bound == 0, "bind to \(source) failed: \(errno)")
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(result == 0, "connect failed: \(errno)")
        return RawSocket(fd: fd)
    }

    /// Sends all of `bytes`; false once the connection is gone (never raises SIGPIPE).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// Whether the server has closed its end: a read that does not wait sees end of file or a reset.
    /// Bytes the server sent before (a SETTINGS frame, an answer) are consumed.
    func isClosedByServer() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 0) > 0 else { return false }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { continue }
            if n < 0 && errno == EINTR { continue }
            return true
        }
    }

    enum Ending: Equatable { case closedByServer, reset, timedOut }

    /// Reads until the server closes the connection or `seconds` pass without a byte.
    func readToEnd(seconds: Int = 20) -> (bytes: [UInt8], ending: Ending) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 { received += buffer[0..<n]; continue }
            if n == 0 { return (received, .closedByServer) }
            if errno == EINTR { continue }
            return (received, errno == EAGAIN || errno == EWOULDBLOCK ? .timedOut : .reset)
        }
    }

    func close() { _ = Glibc.close(fd) }
}

/// The value of one sample of the server's metrics (0 when it does not exist yet).
func metricValue(_ server: RunningServer, _ sample: String) -> Double {
    let text = String(decoding: server.server.metrics.exposition(), as: UTF8.self)
    for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
        return Double(line.dropFirst(sample.count + 1)) ?? 0
    }
    return 0
}

/// Every file under `root` with its contents: to show that a refused upload left
/// nothing behind (no temp file) and changed nothing stored.
func snapshotTree(_ root: String) -> [String: [UInt8]] {
    var files = [String: [UInt8]]()
    guard let walker = FileManager.default.enumerator(atPath: root) else { return files }
    while let relative = walker.nextObject() as? String {
        let path = root + "/" + relative
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
        files[relative] = (try? Data(contentsOf: URL(fileURLWithPath: path))).map { Array($0) } ?? []
    }
    return files
}
