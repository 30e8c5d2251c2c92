import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamServer

/// Uploads larger than their object's cap, endless uploads and uploads that trickle forever are
/// refused (413, or closed at the body deadline), the connection (HTTP/2: the stream) is closed,
/// and nothing is stored: no temp file is left and no stored object changes.
@Suite(.serialized) struct OversizedUploadTests {
    /// A catalogue, a server that accepts writes, and a snapshot of every stored file.
    struct Setup {
        let catalogue: TestCatalogue
        let server: RunningServer
        let token: String
        let before: [String: [UInt8]]

        init(configure: (inout CatalogServer.Options) -> Void = { _ in }) async throws {
            catalogue = try TestCatalogue(chunkCount: 2)
            let (tokenFile, token) = try makeTokenFile(in: catalogue)
            self.token = token
            server = try await RunningServer.start(catalogue: catalogue) { options in
                options.tokenFile = tokenFile
                configure(&options)
            }
            before = snapshotTree(catalogue.directory.root)
        }

        /// The path of an object that is already stored: a refused upload must not change it.
        var storedChunkPath: String { "/" + catalogue.chunks[0].object.path }
        var chunkCap: Int { server.server.store.directory.maximumObjectBytes(catalogue.chunks[0].object) }

        func expectNothingStored(sourceLocation: SourceLocation = #_sourceLocation) {
            let after = snapshotTree(catalogue.directory.root)
            #expect(after.keys.sorted() == before.keys.sorted(), "files added or removed (temp files?)", sourceLocation: sourceLocation)
            #expect(after == before, "stored objects changed", sourceLocation: sourceLocation)
        }
    }

    static let tooLarge = "streamvm_http_errors_total{kind=\"upload_too_large\"}"

    @Test func declaredTooLargeIsRefusedBeforeTheBodyIsSentHTTP1() async throws {
        let setup = try await Setup()
        let socket = RawSocket.connect(port: setup.server.port)
        // No body follows: the answer must come from the head alone, and the connection must close.
        socket.send("PUT \(setup.storedChunkPath) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(setup.token)\r\nContent-Length: 100000000000\r\n\r\n")
        let answer = try await offPool { socket.readToEnd() }
        socket.close()
        #expect(String(decoding: answer.bytes.prefix(12), as: UTF8.self) == "HTTP/1.1 413")
        #expect(answer.ending == .closedByServer)
        #expect(metricValue(setup.server, Self.tooLarge) == 1)
        setup.expectNothingStored()
        await setup.server.stop()
    }

    /// A chunked body that never ends: 413 once it passes the cap, then the server stops reading and
    /// closes (after a short linger), so the sender's writes fail.
    @Test func endlessChunkedBodyIsCutOffHTTP1() async throws {
        let setup = try await Setup()
        let socket = RawSocket.connect(port: setup.server.port)
        socket.send("PUT \(setup.storedChunkPath) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(setup.token)\r\nTransfer-Encoding: chunked\r\n\r\n")
        let chunk = Array("10000\r\n".utf8) + [UInt8](repeating: 0x5a, count: 0x10000) + Array("\r\n".utf8)
        let writer = Task.detached { () -> Int in
            var sent = 0
            // Bounded so that a server that never closes fails the test instead of hanging it.
            while sent < 64 << 30, socket.send(chunk) { sent += chunk.count }
            return sent
        }
        let answer = try await offPool { socket.readToEnd(seconds: 60) }
        let sent = await writer.value
        socket.close()
        #expect(String(decoding: answer.bytes.prefix(12), as: UTF8.self) == "HTTP/1.1 413", "\(String(decoding: answer.bytes.prefix(200), as: UTF8.self))")
        #expect(answer.ending != .timedOut)
        #expect(sent > setup.chunkCap && sent < 64 << 30, "the sender was cut off after passing the cap (sent \(sent))")
        setup.expectNothingStored()
        await setup.server.stop()
    }

    @Test func tooLargeTraceIsRefusedHTTP1() async throws {
        let catalogue = try TestCatalogue(chunkCount: 1)
        let (tokenFile, token) = try makeTokenFile(in: catalogue, token: "trace-token-0123456789abcdef", name: "trace-token")
        let server = try await RunningServer.start(catalogue: catalogue) { $0.traceTokenFile = tokenFile }
        let socket = RawSocket.connect(port: server.port)
        socket.send("POST /v1/traces/demo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nContent-Length: \(TraceStore.maximumTraceBytes + 1)\r\n\r\n")
        let answer = try await offPool { socket.readToEnd() }
        socket.close()
        #expect(String(decoding: answer.bytes.prefix(12), as: UTF8.self) == "HTTP/1.1 413")
        #expect(answer.ending == .closedByServer)
        #expect(snapshotTree(catalogue.base + "/traces").isEmpty)
        await server.stop()
    }

    /// A body trickled below the cap is closed at the body deadline; nothing is stored.
    @Test func bodyThatNeverCompletesIsClosedAtTheBodyDeadline() async throws {
        let setup = try await Setup { options in
            options.stallTimeout = .seconds(300)
            options.connectionLimits.bodyTimeout = .seconds(2)
        }
        let socket = RawSocket.connect(port: setup.server.port)
        socket.send("PUT \(setup.storedChunkPath) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(setup.token)\r\nContent-Length: 1000\r\n\r\nabc")
        let trickled = try await offPool { SlowlorisTests.trickle(socket, [UInt8](repeating: 0x41, count: 900), interval: .milliseconds(200)) }
        socket.close()
        #expect(trickled.closedByServer && trickled.sent < 900, "\(trickled)")
        #expect(metricValue(setup.server, "streamvm_connections_closed_by_limit_total{reason=\"body_timeout\"}") == 1)
        setup.expectNothingStored()
        await setup.server.stop()
    }

    /// curl as the HTTP/2 client, with `stdin` as its input; returns curl's output (`-w`).
    static func curlUpload(_ arguments: [String], stdin: FileHandle?) async throws -> String {
        try await offPool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            process.arguments = ["--silent", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}"] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            if let stdin { process.standardInput = stdin }
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return output
        }
    }

    /// h2c: a declared 10 GiB upload (a sparse file) and an endless one (/dev/zero on stdin, sent
    /// as DATA frames without a length) both get 413 and their stream reset; the connection's other
    /// uses go on and nothing is stored.
    @Test func oversizedAndEndlessUploadsAreRefusedHTTP2() async throws {
        let setup = try await Setup()
        let url = "http://127.0.0.1:\(setup.server.port)\(setup.storedChunkPath)"
        let auth = ["-H", "Authorization: Bearer \(setup.token)"]
        let sparse = setup.catalogue.base + "/ten-gib"
        #expect(FileManager.default.createFile(atPath: sparse, contents: nil))
        #expect(truncate(sparse, 10 << 30) == 0)
        let declared = try await Self.curlUpload(["--http2-prior-knowledge", "-T", sparse] + auth + [url], stdin: nil)
        #expect(declared == "413")
        let zero = try #require(FileHandle(forReadingAtPath: "/dev/zero"))
        let endless = try await Self.curlUpload(["--http2-prior-knowledge", "-T", "-"] + auth + [url], stdin: zero)
        try zero.close()
        #expect(endless == "413")
        #expect(metricValue(setup.server, Self.tooLarge) == 2)
        try FileManager.default.removeItem(atPath: sparse)
        setup.expectNothingStored()
        // The server still answers on a new HTTP/2 connection.
        let read = try await curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", url])
        #expect(read.output == "200")
        await setup.server.stop()
    }

    /// The same over TLS with h2 chosen by ALPN.
    @Test(.needsOpenSSL) func endlessUploadIsRefusedOverTLS() async throws {
        let catalogue = try TestCatalogue(chunkCount: 1)
        let certificate = try await TestCertificate.make(in: catalogue.base)
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.tokenFile = tokenFile
            options.tlsCertificate = certificate.certificate
            options.tlsKey = certificate.key
        }
        let before = snapshotTree(catalogue.directory.root)
        let url = "https://127.0.0.1:\(server.port)/" + catalogue.chunks[0].object.path
        let zero = try #require(FileHandle(forReadingAtPath: "/dev/zero"))
        let endless = try await Self.curlUpload(["--http2", "--cacert", certificate.certificate, "-T", "-",
                                                 "-H", "Authorization: Bearer \(token)", url], stdin: zero)
        try zero.close()
        #expect(endless == "413")
        #expect(snapshotTree(catalogue.directory.root) == before)
        await server.stop()
    }
}
