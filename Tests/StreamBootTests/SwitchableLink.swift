import Foundation

/// A loopback TCP forwarder that a test can cut (every open connection reset, new ones refused by
/// closing them at once) and restore: a network link that drops mid-boot and comes back.
final class SwitchableLink: @unchecked Sendable {
    let upstreamPort: UInt16
    private(set) var port: UInt16 = 0
    private let listener: Int32
    private let lock = NSLock()
    private var up = true
    private var stopped = false
    /// Every socket this link opened; closed only in `stop`, so a shutdown never hits a reused number.
    private var sockets: [Int32] = []

    init(upstreamPort: UInt16) throws {
        self.upstreamPort = upstreamPort
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 64) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard listener >= 0, ok else { throw POSIXError(.EADDRNOTAVAIL) }
        port = UInt16(bigEndian: address.sin_port)
        Thread { [self] in acceptLoop() }.start()
    }

    deinit { stop() }

    var url: String { "http://127.0.0.1:\(port)" }

    func cut() {
        let open = lock.withLock { () -> [Int32] in
            up = false
            return sockets
        }
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    func restore() { lock.withLock { up = true } }

    func stop() {
        let open = lock.withLock { () -> [Int32]? in
            guard !stopped else { return nil }
            stopped = true
            return sockets
        }
        guard let open else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
        // Give the pump threads a moment to leave recv/send before the numbers are released.
        usleep(50_000)
        for fd in open { close(fd) }
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if lock.withLock({ stopped }) { return }
                continue
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: upstreamPort)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            let admitted = lock.withLock { () -> Bool in
                sockets += [client, upstream]
                return up && !stopped && connected
            }
            guard admitted else {
                shutdown(client, Int32(SHUT_RDWR))
                shutdown(upstream, Int32(SHUT_RDWR))
                continue
            }
            Thread { Self.pump(from: client, to: upstream) }.start()
            Thread { Self.pump(from: upstream, to: client) }.start()
        }
    }

    private static func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            var offset = 0
            while offset < count {
                let sent = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + offset, count - offset, Int32(MSG_NOSIGNAL)) }
                if sent < 0, errno == EINTR { continue }
                guard sent > 0 else { shutdown(source, Int32(SHUT_RDWR)); return }
                offset += sent
            }
        }
        // One side closed: close the other completely (HTTP needs no half-open connections, and a
        // server would otherwise wait out its idle timeout on shutdown).
        shutdown(destination, Int32(SHUT_RDWR))
    }
}
