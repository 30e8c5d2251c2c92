import Foundation
import Catalog
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient

/// A WAN emulator for benchmarks: a TCP proxy on loopback that forwards every connection to an
/// upstream server through a bottleneck of `rateBitsPerSecond` with `rttSeconds` of round-trip
/// propagation delay (half each way). Each direction is one FIFO link shared by all connections (a
/// client opening more connections gets no more bandwidth, as on a real access link): a segment
/// leaves the bottleneck at max(arrival, previous departure of any connection) + size / rate and is
/// delivered one-way delay later. The router queue holds one bandwidth-delay product (at least
/// 64 KiB); when it is full the proxy stops reading, so TCP's flow control pushes back on the sender.
public final class ShapingProxy: @unchecked Sendable {
    public let rateBitsPerSecond: Double
    public let rttSeconds: Double
    public let upstreamHost: String
    public let upstreamPort: UInt16
    public private(set) var port: UInt16 = 0
    private let listener: Int32
    private let lock = NSLock()
    private var stopped = false
    private var sockets: [Int32] = []
    private var accepted = 0
    private let downlink: Bottleneck
    private let uplink: Bottleneck

    /// Largest piece forwarded at once; smaller pieces pace more smoothly (4 KiB ≈ 0.3 ms at 100 Mbit/s).
    static let segmentBytes = 4096

    public init(upstreamHost: String = "127.0.0.1", upstreamPort: UInt16, rateBitsPerSecond: Double, rttSeconds: Double) throws {
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.rateBitsPerSecond = rateBitsPerSecond
        self.rttSeconds = rttSeconds
        downlink = Bottleneck(rateBytesPerSecond: rateBitsPerSecond / 8, rttSeconds: rttSeconds)
        uplink = Bottleneck(rateBytesPerSecond: rateBitsPerSecond / 8, rttSeconds: rttSeconds)
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw ClientError.io(path: "proxy socket", errno: errno) }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 64) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard ok else {
            close(listener)
            throw ClientError.io(path: "proxy listen", errno: errno)
        }
        port = UInt16(bigEndian: address.sin_port)
        Thread { [self] in acceptLoop() }.start()
    }

    deinit { stop() }

    public var url: String { "http://127.0.0.1:\(port)" }

    /// Connections clients opened through the proxy so far (HTTP/2 multiplexing should need one per origin).
    public var connectionsAccepted: Int { lock.withLock { accepted } }

    public func stop() {
        lock.lock()
        guard !stopped else { lock.unlock(); return }
        stopped = true
        let open = sockets
        lock.unlock()
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        return address
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                lock.lock()
                let done = stopped
                lock.unlock()
                if done { return }
                continue
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: upstreamPort)
            address.sin_addr.s_addr = inet_addr(upstreamHost)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else {
                close(client)
                close(upstream)
                continue
            }
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(upstream, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            lock.lock()
            sockets += [client, upstream]
            accepted += 1
            lock.unlock()
            let down = ShapedLink(bottleneck: downlink, oneWayDelay: rttSeconds / 2)
            let up = ShapedLink(bottleneck: uplink, oneWayDelay: rttSeconds / 2)
            down.run(from: upstream, to: client)
            // The kernel completed the client's handshake at once; on the emulated path SYN and
            // SYN-ACK take one round trip, so the client's first bytes leave one RTT later.
            up.run(from: client, to: upstream, startAfter: rttSeconds)
        }
    }
}

/// The bottleneck of one direction, shared by every connection through the proxy. Its backlog is
/// implied by the last departure time: at time t, (lastDeparture − t) × rate bytes are still queued.
final class Bottleneck: @unchecked Sendable {
    let rate: Double
    /// The router queue: one bandwidth-delay product, at least 64 KiB.
    let bufferBytes: Double
    private let lock = NSLock()
    private var lastDeparture = 0.0

    init(rateBytesPerSecond: Double, rttSeconds: Double) {
        rate = rateBytesPerSecond
        bufferBytes = max(64 * 1024, rateBytesPerSecond * rttSeconds)
    }

    /// Queues `bytes` that arrived now and returns when they leave the bottleneck; blocks while the
    /// queue has no room for them.
    func enqueue(_ bytes: Int) -> Double {
        while true {
            lock.lock()
            let now = monotonicSeconds()
            let backlogBytes = max(0, lastDeparture - now) * rate
            if backlogBytes + Double(bytes) <= bufferBytes || backlogBytes == 0 {
                let departure = max(now, lastDeparture) + Double(bytes) / rate
                lastDeparture = departure
                lock.unlock()
                return departure
            }
            let wait = (backlogBytes + Double(bytes) - bufferBytes) / rate
            lock.unlock()
            usleep(useconds_t(max(50, wait * 1e6)))
        }
    }
}

/// One direction of one connection: a reader thread stamps segments with their delivery time (from
/// the shared bottleneck), a writer thread delivers them when due.
final class ShapedLink: @unchecked Sendable {
    private let bottleneck: Bottleneck
    private let delay: Double
    private let condition = NSCondition()
    private var queue: [(due: Double, bytes: [UInt8])] = []
    private var head = 0
    private var closed = false

    init(bottleneck: Bottleneck, oneWayDelay: Double) {
        self.bottleneck = bottleneck
        delay = oneWayDelay
    }

    func run(from source: Int32, to destination: Int32, startAfter: Double = 0) {
        Thread { [self] in
            if startAfter > 0 { usleep(useconds_t(startAfter * 1e6)) }
            read(source, destination)
        }.start()
        Thread { [self] in write(destination, source) }.start()
    }

    private func read(_ source: Int32, _ destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: ShapingProxy.segmentBytes)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                condition.lock()
                closed = true
                condition.broadcast()
                condition.unlock()
                return
            }
            // Blocks while the router queue is full: this connection's sender then fills its socket buffers.
            let departure = bottleneck.enqueue(n)
            condition.lock()
            queue.append((departure + delay, Array(buffer[0..<n])))
            condition.broadcast()
            condition.unlock()
        }
    }

    private func write(_ destination: Int32, _ source: Int32) {
        while true {
            condition.lock()
            while head == queue.count && !closed { condition.wait() }
            if head == queue.count && closed {
                condition.unlock()
                shutdown(destination, Int32(SHUT_WR))
                return
            }
            let (due, bytes) = queue[head]
            head += 1
            if head > 1024 {
                queue.removeFirst(head)
                head = 0
            }
            condition.unlock()
            let wait = due - monotonicSeconds()
            if wait > 0 { usleep(useconds_t(wait * 1e6)) }
            let ok = bytes.withUnsafeBytes { raw -> Bool in
                var offset = 0
                while offset < raw.count {
                    let n = send(destination, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return false }
                    offset += n
                }
                return true
            }
            if !ok {
                condition.lock()
                closed = true
                condition.broadcast()
                condition.unlock()
                shutdown(source, Int32(SHUT_RDWR))
                return
            }
        }
    }
}
