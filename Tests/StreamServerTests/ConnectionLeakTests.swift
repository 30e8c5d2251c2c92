import Catalog
import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing
@testable import StreamServer

/// Stalled, slow and vanishing clients must not leave descriptors behind. The server runs in this
/// process; the tests count the descriptors that belong to it (its sockets and its catalogue files),
/// which must come back to where they started once clients are gone and stalls have timed out.
@Suite(.serialized) struct ConnectionLeakTests {
    /// Descriptors of this process that belong to the server under test: sockets whose local port is
    /// the server's (found through /proc/net/tcp and tcp6) and files under its catalogue. Counting only
    /// these keeps the check exact while suites running in parallel open and close descriptors.
    static func openDescriptors(_ server: RunningServer, _ catalogue: TestCatalogue) -> Int {
        let sockets = socketInodes(localPort: server.port)
        let root = catalogue.directory.root
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.filter { entry in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + entry) else { return false }
            if target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()) { return sockets.contains(inode) }
            return target.hasPrefix(root)
        }.count
    }

    /// The whole of a /proc file. (Foundation's `String(contentsOfFile:)` stops after the first 4 KiB
    /// of a procfs file, whose reported size is 0; /proc/net/tcp is far longer on a busy host.)
    static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var block = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = block.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes.append(contentsOf: block[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Inodes of the TCP sockets whose local port is `port` (the server's end of each connection, and
    /// its listener).
    static func socketInodes(localPort port: Int) -> Set<UInt64> {
        var inodes = Set<UInt64>()
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = readProcFile(table) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                // Fields: sl, local "ADDR:PORT" (hex), remote, state, queues, timer, retransmits, uid, timeout, inode.
                guard fields.count > 9, let colon = fields[1].lastIndex(of: ":"),
                      Int(fields[1][fields[1].index(after: colon)...], radix: 16) == port,
                      let inode = UInt64(fields[9]), inode != 0 else { continue }
                inodes.insert(inode)
            }
        }
        return inodes
    }

    /// A raw TCP client socket to the server (blocking, for simple scripted misbehaviour).
    static func connectSocket(port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(result == 0, "connect failed: \(errno)")
        return fd
    }

    static func send(_ fd: Int32, _ text: String) {
        _ = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    }

    /// Waits (bounded) for the descriptor count to drop to `baseline`; returns the last count seen.
    static func settle(_ server: RunningServer, _ catalogue: TestCatalogue, to baseline: Int, within seconds: Int) async throws -> Int {
        var count = openDescriptors(server, catalogue)
        for _ in 0..<(seconds * 10) where count > baseline {
            try await Task.sleep(for: .milliseconds(100))
            count = openDescriptors(server, catalogue)
        }
        return count
    }

    /// Reads each socket until the server closes it (EOF), all within `seconds`; returns how many saw EOF.
    static func drainAndClose(_ sockets: [Int32], within seconds: Double = 60) -> Int {
        var closedByServer = 0
        let deadline = Date().addingTimeInterval(seconds)
        for fd in sockets {
            var byte: UInt8 = 0
            // Generous: only a socket the server has not closed yet waits (the rest return at once),
            // and on a loaded CI host the 1 s stall guard can fire many seconds late.
            let left = max(1, deadline.timeIntervalSinceNow)
            var timeout = timeval(tv_sec: Int(left), tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // Drain whatever the server answered (e.g. 400 or an h2 SETTINGS frame) until EOF. A reset
            // is the server closing too: it closes with our unread request bytes still queued (a body
            // never finished), and then the kernel sends RST instead of FIN.
            while true {
                let n = read(fd, &byte, 1)
                if n == 0 { closedByServer += 1; break }
                if n < 0 {
                    if errno == ECONNRESET { closedByServer += 1 }
                    break
                }
            }
            close(fd)
        }
        return closedByServer
    }

    static func warmUp(_ server: RunningServer, _ target: String, attempts: Int = 5) async throws {
        for attempt in 1...attempts {
            do {
                _ = try await request(server, .GET, target)
                return
            } catch where attempt < attempts {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    @Test func stalledAndVanishingClientsDoNotLeakDescriptors() async throws {
        let catalogue = try TestCatalogue(chunkCount: 2)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.stallTimeout = .seconds(1) }
        // One request first so that lazily created resources (thread pool, verifier) exist before the baseline.
        // Warm-up only: on a loaded host the 1 s stall guard may cut one off, so it may be retried.
        try await Self.warmUp(server, "/" + catalogue.chunks[0].object.path)
        try await Self.warmUp(server, "/healthz")
        try await Task.sleep(for: .milliseconds(300))
        let baseline = Self.openDescriptors(server, catalogue)
        let chunkPath = "/" + catalogue.chunks[1].object.path

        var stalled = [Int32]()
        for index in 0..<150 {
            let fd = Self.connectSocket(port: server.port)
            switch index % 5 {
            case 0: break                                                        // connects, says nothing
            case 1: Self.send(fd, "GET \(chunkPath) HTTP/1.1\r\nHost: x\r\n")     // headers never finished
            case 2: Self.send(fd, "PUT \(chunkPath) HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc") // body never finished
            case 3: Self.send(fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")              // h2 preface, then silence
            default: Self.send(fd, "PRI * HT")                                    // half a preface
            }
            stalled.append(fd)
        }
        // Clients that ask for data and vanish without reading the answer.
        for _ in 0..<50 {
            let fd = Self.connectSocket(port: server.port)
            Self.send(fd, "GET \(chunkPath) HTTP/1.1\r\nHost: x\r\n\r\nGET \(chunkPath) HTTP/1.1\r\nHost: x\r\n\r\n")
            var linger = linger(l_onoff: 1, l_linger: 0)   // close with RST: an abrupt disconnect
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            close(fd)
        }
        // The server accepts them as its accept loop gets to them (on a busy host that can lag the
        // connects by many milliseconds), so wait for the first ones, bounded.
        var accepted = Self.openDescriptors(server, catalogue)
        for _ in 0..<2000 where accepted <= baseline {
            try await Task.sleep(for: .milliseconds(10))
            accepted = Self.openDescriptors(server, catalogue)
        }
        #expect(accepted > baseline)
        // The server must close the stalled connections by itself (stall timeout 1 s): the client
        // sockets then read EOF. Closing our ends afterwards must bring the count back to baseline.
        try await Task.sleep(for: .seconds(3))
        let stalledSockets = stalled
        let closedByServer = try await offPool { Self.drainAndClose(stalledSockets) }
        #expect(closedByServer == stalled.count, "\(closedByServer) of \(stalled.count) stalled clients closed by the server")
        let settled = try await Self.settle(server, catalogue, to: baseline, within: 30)
        #expect(settled <= baseline, "descriptors: baseline \(baseline), now \(settled)")
        // The server still works.
        #expect(try await request(server, .GET, chunkPath).status == 200)
        await server.stop()
    }

    /// A client that asks for a large answer and stops reading is disconnected, and its buffers freed.
    @Test func clientThatStopsReadingIsDisconnected() async throws {
        let catalogue = try TestCatalogue(chunkCount: 1)
        // A big model object, larger than the socket buffers, streamed from memory.
        let model = [UInt8](repeating: UInt8(ascii: "m"), count: 32 << 20)
        let object = CatalogObject.model(Digest.of(model))
        try catalogue.directory.write(object, data: model)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.stallTimeout = .seconds(1) }
        let baseline = Self.openDescriptors(server, catalogue)
        let fd = Self.connectSocket(port: server.port)
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        Self.send(fd, "GET /\(object.path) HTTP/1.1\r\nHost: x\r\n\r\n")
        try await Task.sleep(for: .seconds(4))
        // Now read: the server must have given up, so we see less than the whole object then EOF.
        let received = try await offPool { () -> Int in
            var received = 0
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                received += n
            }
            close(fd)
            return received
        }
        #expect(received > 0)
        #expect(received < model.count)
        let settled = try await Self.settle(server, catalogue, to: baseline, within: 10)
        #expect(settled <= baseline, "descriptors: baseline \(baseline), now \(settled)")
        await server.stop()
    }
}
