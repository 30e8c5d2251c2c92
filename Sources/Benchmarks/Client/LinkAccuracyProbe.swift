import Foundation
import Catalog
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient

/// Measures what a `ShapingProxy` actually delivers, so benchmark figures can be read against the
/// emulated link rather than its nominal settings: a private TCP source behind the proxy echoes one
/// byte (round-trip time) and then sends a bulk block (rate, timed from its first to last byte).
public enum LinkAccuracyProbe {
    public struct Result: Sendable, Codable {
        public var nominalRateMbit: Double
        public var measuredRateMbit: Double
        public var nominalRTTms: Double
        public var measuredRTTms: Double
    }

    public static func measure(rateBitsPerSecond: Double, rttSeconds: Double, bulkSeconds: Double = 2) throws -> Result {
        let bulkBytes = Int(rateBitsPerSecond / 8 * bulkSeconds)
        let source = try BulkSource(bulkBytes: bulkBytes)
        defer { source.stop() }
        let proxy = try ShapingProxy(upstreamPort: source.port, rateBitsPerSecond: rateBitsPerSecond, rttSeconds: rttSeconds)
        defer { proxy.stop() }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = ShapingProxy.loopback(port: proxy.port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw ClientError.io(path: "probe connect", errno: errno) }
        var byte: UInt8 = 1
        // Round trip: the best of a few one-byte echoes.
        var rtt = Double.infinity
        for _ in 0..<5 {
            let start = monotonicSeconds()
            guard send(fd, &byte, 1, 0) == 1, recv(fd, &byte, 1, Int32(MSG_WAITALL)) == 1 else {
                throw ClientError.io(path: "probe echo", errno: errno)
            }
            rtt = min(rtt, monotonicSeconds() - start)
        }
        byte = 2
        guard send(fd, &byte, 1, 0) == 1 else { throw ClientError.io(path: "probe bulk", errno: errno) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var received = 0
        var first = 0.0
        var firstSize = 0
        while received < bulkBytes {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw ClientError.io(path: "probe bulk", errno: errno) }
            if received == 0 {
                first = monotonicSeconds()
                firstSize = n
            }
            received += n
        }
        let seconds = monotonicSeconds() - first
        let rate = Double(received - firstSize) * 8 / seconds
        return Result(nominalRateMbit: rateBitsPerSecond / 1e6, measuredRateMbit: rate / 1e6,
                      nominalRTTms: rttSeconds * 1000, measuredRTTms: rtt * 1000)
    }
}

/// The probe's far end: echoes byte 1, answers byte 2 with `bulkBytes` bytes.
final class BulkSource: @unchecked Sendable {
    let port: UInt16
    private let listener: Int32
    private let bulkBytes: Int

    init(bulkBytes: Int) throws {
        self.bulkBytes = bulkBytes
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        var address = ShapingProxy.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 4) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard ok else { throw ClientError.io(path: "probe source", errno: errno) }
        port = UInt16(bigEndian: address.sin_port)
        Thread { [self] in serve() }.start()
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func serve() {
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var byte: UInt8 = 0
        let block = [UInt8](repeating: 0x55, count: 65536)
        while recv(fd, &byte, 1, Int32(MSG_WAITALL)) == 1 {
            if byte == 1 {
                guard send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { return }
                continue
            }
            var sent = 0
            while sent < bulkBytes {
                let n = block.withUnsafeBytes { send(fd, $0.baseAddress, min($0.count, bulkBytes - sent), Int32(MSG_NOSIGNAL)) }
                guard n > 0 else { return }
                sent += n
            }
        }
    }
}
