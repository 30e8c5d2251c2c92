import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamServer

/// Many idle and trickling connections (slowloris) are closed by the connection caps and the
/// request-head deadline, while a well-behaved client from another address is still served.
/// The stall timeout is set far beyond the test, so it cannot be what closes anything.
@Suite(.serialized) struct SlowlorisTests {
    static let refusedByAddress = "streamvm_connections_refused_total{reason=\"address_limit\"}"
    static let refusedByTotal = "streamvm_connections_refused_total{reason=\"total_limit\"}"
    static let closedAtHeadDeadline = "streamvm_connections_closed_by_limit_total{reason=\"head_timeout\"}"
    static let closedAsStalled = "streamvm_connections_closed_by_limit_total{reason=\"stall\"}"

    /// Sends `bytes` one at a time, `interval` apart, until all are sent or the server closes the
    /// connection; returns how many were sent and whether the server closed it.
    static func trickle(_ socket: RawSocket, _ bytes: [UInt8], interval: Duration) -> (sent: Int, closedByServer: Bool) {
        for (index, byte) in bytes.enumerated() {
            if socket.isClosedByServer() || !socket.send([byte]) { return (index, true) }
            Thread.sleep(forTimeInterval: Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18)
        }
        return (bytes.count, socket.isClosedByServer())
    }

    @Test func idleAndTricklingConnectionsAreClosedWhileANormalClientIsServed() async throws {
        let catalogue = try TestCatalogue(chunkCount: 2)
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.stallTimeout = .seconds(300)
            options.connectionLimits.headTimeout = .seconds(3)
            options.connectionLimits.maxConnectionsPerAddress = 40
        }
        let chunk = catalogue.chunks[0]
        let chunkPath = "/" + chunk.object.path
        let baseline = ConnectionLeakTests.openDescriptors(server, catalogue)

        // 60 connections from 127.0.0.1 that never finish a head: 40 are admitted, 20 refused at once.
        let connected = ContinuousClock.now
        var idle = [RawSocket]()
        for index in 0..<60 {
            let socket = RawSocket.connect(port: server.port)
            switch index % 3 {
            case 0: break                                                        // says nothing
            case 1: socket.send("GET \(chunkPath) HTTP/1.1\r\nHost: x\r\n")     // head never finished
            default: socket.send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")           // h2 preface, no request
            }
            idle.append(socket)
        }
        // Tricklers from 127.0.0.3: progress every 300 ms (the stall guard is content) but no head.
        let http1Head = Array("GET \(chunkPath) HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nAccept: */*\r\n\r\n".utf8)
        let tricklers = (0..<2).map { _ in RawSocket.connect(port: server.port, from: "127.0.0.3") }
        // On threads of their own: sleeping on the cooperative pool would stall the test's own steps.
        let http1Trickle = Task { try await offPool { Self.trickle(tricklers[0], http1Head, interval: .milliseconds(300)) } }
        let h2Trickle = Task { try await offPool { Self.trickle(tricklers[1], Array(PriorKnowledgeSniffer<Int>.preface) + [0, 0, 0, 4, 0, 0, 0, 0, 0], interval: .milliseconds(300)) } }

        let idleSockets = idle
        // The accept loop closes the 20 beyond the limit at once; a loaded host may take a moment
        // to get to all of them, so wait for 20 (or the head deadline) before counting.
        let refusedAtOnce = try await offPool { () -> Int in
            var refused = 0
            repeat {
                Thread.sleep(forTimeInterval: 0.1)
                refused = idleSockets.filter { $0.isClosedByServer() }.count
            } while refused < 20 && ContinuousClock.now - connected < .milliseconds(2_500)
            return refused
        }
        // (On a host so busy that the check came after the deadline, all 60 are closed by then.)
        if ContinuousClock.now - connected < .seconds(3) {
            #expect(refusedAtOnce == 20, "connections beyond --max-connections-per-address are closed at accept")
        }
        #expect(refusedAtOnce >= 20)
        #expect(metricValue(server, Self.refusedByAddress) == 20)

        // Meanwhile a normal client from another address is served, over HTTP/1.1 and h2c.
        let normal = RawSocket.connect(port: server.port, from: "127.0.0.2")
        normal.send("GET \(chunkPath) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let answer = try await offPool { normal.readToEnd() }
        normal.close()
        #expect(String(decoding: answer.bytes.prefix(12), as: UTF8.self) == "HTTP/1.1 200")
        #expect(answer.bytes.count > chunk.frame.count)
        let h2 = try await curl(["--http2-prior-knowledge", "--interface", "127.0.0.2", "-o", "/dev/null",
                                 "-w", "%{http_version} %{http_code} %{size_download}", "http://127.0.0.1:\(server.port)\(chunkPath)"])
        #expect(h2.output == "2 200 \(chunk.frame.count)")

        // The head deadline (3 s) closes every idle connection and both tricklers, long before a
        // trickler could finish its head (~20 s at one byte per 300 ms).
        let (http1Result, h2Result) = (try await http1Trickle.value, try await h2Trickle.value)
        #expect(http1Result.closedByServer && http1Result.sent < http1Head.count, "HTTP/1.1 trickler: \(http1Result)")
        #expect(h2Result.closedByServer && h2Result.sent < 33, "h2 trickler: \(h2Result)")
        let allClosed = try await offPool { () -> Int in
            // Bounded but generous: on a loaded host the accept loop and the deadline can lag by seconds.
            for _ in 0..<300 where !idleSockets.allSatisfy({ $0.isClosedByServer() }) { Thread.sleep(forTimeInterval: 0.1) }
            return idleSockets.filter { $0.isClosedByServer() }.count
        }
        #expect(allClosed == idle.count)
        // 40 admitted idle connections and 2 tricklers (on a very busy host the normal client's
        // connections may also have reached the deadline before they were closed).
        #expect(metricValue(server, Self.closedAtHeadDeadline) >= 42)
        #expect(metricValue(server, Self.closedAsStalled) == 0)
        for socket in idle + tricklers { socket.close() }
        let settled = try await ConnectionLeakTests.settle(server, catalogue, to: baseline, within: 10)
        #expect(settled <= baseline, "descriptors: baseline \(baseline), now \(settled)")
        #expect(metricValue(server, "streamvm_connections_open") == 0)
        await server.stop()
    }

    /// On HTTP/1.1 the deadline runs again after each response: a keep-alive connection that then
    /// trickles (or idles) is closed, while one that keeps sending whole requests is not.
    @Test func keepAliveConnectionMustSendEachHeadInTime() async throws {
        let catalogue = try TestCatalogue(chunkCount: 1)
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.stallTimeout = .seconds(300)
            options.connectionLimits.headTimeout = .seconds(2)
        }
        let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        let port = server.port
        // Each connection is opened right before its first request, on the thread that sends it:
        // the deadline runs from the accept, and a late-starting thread on a loaded host must not
        // be charged to the connection.
        let (busyAnswers, trickled) = try await offPool { () -> (Int, (sent: Int, closedByServer: Bool)) in
            // Whole requests 1 s apart for 4 s: each head is in time, so the connection stays.
            let busy = RawSocket.connect(port: port)
            defer { busy.close() }
            var answers = 0
            for _ in 0..<4 {
                guard busy.send(request) else { break }
                var buffer = [UInt8](repeating: 0, count: 4096)
                if read(busy.fd, &buffer, buffer.count) > 0 { answers += 1 }
                Thread.sleep(forTimeInterval: 1)
            }
            // One whole request, then the next head one byte per 300 ms.
            let trickler = RawSocket.connect(port: port)
            defer { trickler.close() }
            trickler.send(request)
            var buffer = [UInt8](repeating: 0, count: 4096)
            _ = read(trickler.fd, &buffer, buffer.count)
            return (answers, Self.trickle(trickler, Array(request.utf8), interval: .milliseconds(300)))
        }
        #expect(busyAnswers == 4)
        #expect(trickled.closedByServer && trickled.sent < request.utf8.count, "\(trickled)")
        #expect(metricValue(server, Self.closedAtHeadDeadline) >= 1)
        await server.stop()
    }

    /// Beyond --max-connections every new connection is closed at accept, from any address; once
    /// connections close, new ones are admitted again.
    @Test func connectionsBeyondTheTotalCapAreRefused() async throws {
        let catalogue = try TestCatalogue(chunkCount: 1)
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.stallTimeout = .seconds(300)
            options.connectionLimits.headTimeout = .seconds(300)
            options.connectionLimits.maxConnections = 10
        }
        let held = (0..<10).map { _ in RawSocket.connect(port: server.port) }
        // Admission happens on two event loops: wait until all ten hold their slots (bounded).
        for _ in 0..<100 where metricValue(server, "streamvm_connections_open") < 10 { try await Task.sleep(for: .milliseconds(50)) }
        let extra = RawSocket.connect(port: server.port, from: "127.0.0.2")
        let ending = try await offPool { extra.readToEnd(seconds: 10) }
        extra.close()
        #expect(ending.bytes.isEmpty && ending.ending != .timedOut, "the 11th connection is closed without an answer")
        #expect(metricValue(server, Self.refusedByTotal) == 1)
        #expect(metricValue(server, "streamvm_connections_open") == 10)
        let stillOpen = try await offPool { held.filter { !$0.isClosedByServer() }.count }
        #expect(stillOpen == 10)
        for socket in held { socket.close() }
        for _ in 0..<50 where metricValue(server, "streamvm_connections_open") > 0 { try await Task.sleep(for: .milliseconds(100)) }
        let served = RawSocket.connect(port: server.port, from: "127.0.0.2")
        served.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let answer = try await offPool { served.readToEnd() }
        served.close()
        #expect(String(decoding: answer.bytes.prefix(12), as: UTF8.self) == "HTTP/1.1 200")
        await server.stop()
    }
}
