import Foundation

/// A tiny HTTP/1.1 server on loopback (raw sockets, one thread per connection) that serves a
/// catalogue directory and misbehaves on request: wrong bytes, short bodies, connection resets,
/// stalls, 5xx, or a substitute body. It answers the HTTP/2 prior-knowledge preface by closing the
/// connection, like a server that only speaks HTTP/1.1.
final class HostilePeer: @unchecked Sendable {
    enum Fault: Sendable, Equatable {
        /// Same length, one byte flipped.
        case wrongBytes
        /// Full Content-Length announced, half the body sent, connection closed.
        case truncate
        /// Headers and half the body, then a TCP reset.
        case reset
        /// Headers and half the body, then silence for this long.
        case stall(seconds: Double)
        case status(Int)
        /// Serve these bytes instead of the file (an old catalogue, a forged one).
        case substitute(Data)
        /// Sends the body at this many bytes per second (to make a run slow enough to interrupt).
        case throttle(bytesPerSecond: Int)
    }

    private struct Rule {
        let pathMatch: @Sendable (String) -> Bool
        let fault: Fault
        var remaining: Int?
    }

    let root: String
    private(set) var port: UInt16 = 0
    private let listener: Int32
    private let lock = NSLock()
    private var rules: [Rule] = []
    private var requests: [String] = []
    private var stopped = false
    private var connections: [Int32] = []

    init(root: String) throws {
        self.root = root
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw POSIXError(.EIO) }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 128) == 0 else { close(listener); throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        port = UInt16(bigEndian: address.sin_port)
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    var url: String { "http://127.0.0.1:\(port)" }

    deinit { stop() }

    func stop() {
        lock.lock()
        guard !stopped else { lock.unlock(); return }
        stopped = true
        let open = connections
        lock.unlock()
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Applies `fault` to requests whose path satisfies `match`, `times` times (nil: always).
    func inject(_ fault: Fault, times: Int? = nil, where match: @escaping @Sendable (String) -> Bool) {
        lock.lock()
        rules.append(Rule(pathMatch: match, fault: fault, remaining: times))
        lock.unlock()
    }

    func clearFaults() {
        lock.lock()
        rules.removeAll()
        lock.unlock()
    }

    /// Paths requested so far, in order.
    var requestLog: [String] {
        lock.lock()
        defer { lock.unlock() }
        return requests
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                lock.lock()
                let done = stopped
                lock.unlock()
                if done { return }
                continue
            }
            lock.lock()
            connections.append(fd)
            lock.unlock()
            let thread = Thread { [self] in serve(fd) }
            thread.start()
        }
    }

    private func nextFault(for path: String) -> Fault? {
        lock.lock()
        defer { lock.unlock() }
        requests.append(path)
        for index in rules.indices where rules[index].pathMatch(path) {
            if let remaining = rules[index].remaining {
                guard remaining > 0 else { continue }
                rules[index].remaining = remaining - 1
            }
            return rules[index].fault
        }
        return nil
    }

    private func serve(_ fd: Int32) {
        defer {
            // Forget the descriptor before closing it: `stop` must never shut down a number that
            // has since been reused (by another test's listener, say).
            lock.withLock { connections.removeAll { $0 == fd } }
            close(fd)
        }
        var pending = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            // Read one request head.
            var headEnd: Int?
            while headEnd == nil {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return }
                pending += buffer[0..<n]
                if pending.starts(with: Array("PRI * HTTP/2.0".utf8)) { return }
                headEnd = findHeadEnd(pending)
                if pending.count > 65536 { return }
            }
            let head = String(decoding: pending[0..<headEnd!], as: UTF8.self)
            pending.removeFirst(headEnd! + 4)
            let requestLine = head.split(separator: "\r\n").first.map(String.init) ?? ""
            let parts = requestLine.split(separator: " ")
            guard parts.count == 3, parts[0] == "GET" else { return }
            let path = String(parts[1])
            guard respond(fd, path: path) else { return }
        }
    }

    private func findHeadEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4) where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }

    /// Sends one response; false closes the connection.
    private func respond(_ fd: Int32, path: String) -> Bool {
        let fault = nextFault(for: path)
        let file = root + path
        var body: Data
        if case .substitute(let data) = fault {
            body = data
        } else if !path.contains(".."), let data = FileManager.default.contents(atPath: file) {
            body = data
        } else {
            return sendAll(fd, Data("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".utf8))
        }
        switch fault {
        case .status(let code):
            return sendAll(fd, Data("HTTP/1.1 \(code) Injected\r\nContent-Length: 5\r\n\r\nerror".utf8))
        case .wrongBytes:
            if !body.isEmpty { body[body.startIndex + body.count / 2] ^= 0x5a }
        default:
            break
        }
        let header = Data("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\nContent-Type: application/octet-stream\r\n\r\n".utf8)
        switch fault {
        case .truncate:
            _ = sendAll(fd, header + body.prefix(body.count / 2))
            return false
        case .reset:
            _ = sendAll(fd, header + body.prefix(body.count / 2))
            var linger = Foundation.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Foundation.linger>.size))
            return false
        case .stall(let seconds):
            _ = sendAll(fd, header + body.prefix(body.count / 2))
            Thread.sleep(forTimeInterval: seconds)
            return false
        case .throttle(let rate):
            guard sendAll(fd, header) else { return false }
            let slice = max(1, rate / 20)
            var offset = 0
            while offset < body.count {
                let end = min(body.count, offset + slice)
                guard sendAll(fd, body[offset..<end]) else { return false }
                offset = end
                Thread.sleep(forTimeInterval: 0.05)
            }
            return true
        default:
            return sendAll(fd, header + body)
        }
    }

    private func sendAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                offset += n
            }
            return true
        }
    }
}
