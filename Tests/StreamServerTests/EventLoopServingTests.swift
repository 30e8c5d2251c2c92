import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamServer

/// Reads of cached verified objects over HTTP/2 are answered on the event loop
/// (`ObjectFastPathHandler`); these check that such answers are the router's answers, byte for byte
/// and header for header, and that the event loop never serves what the router would refuse.
@Suite struct EventLoopServingTests {
    /// An HTTP/2 exchange made by curl: status, lower-cased response headers (pseudo-headers and
    /// `date` left out) and body.
    struct Exchange {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
        /// Body bytes curl received (with `-I` curl writes the headers to the output file instead).
        var downloaded: Int
    }

    static func exchange(_ url: String, _ arguments: [String] = [], scratch: String, tls cert: String? = nil) async throws -> Exchange {
        let headerFile = scratch + "/headers-\(UUID().uuidString)", bodyFile = scratch + "/body-\(UUID().uuidString)"
        let transport = cert.map { ["--http2", "--cacert", $0] } ?? ["--http2-prior-knowledge"]
        let result = try await curl(transport + arguments + ["-D", headerFile, "-o", bodyFile, "-w", "%{http_version} %{size_download}", url])
        #expect(result.status == 0, "curl failed: \(result.output)")
        let written = result.output.split(separator: " ")
        #expect(written.first == "2", "not HTTP/2: \(result.output)")
        let lines = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
        var status = 0
        var headers = [String: String]()
        for line in lines.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("HTTP/") {
                status = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            if name == "date" { continue }
            headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let body = (try? Data(contentsOf: URL(fileURLWithPath: bodyFile))).map { [UInt8]($0) } ?? []
        return Exchange(status: status, headers: headers, body: body, downloaded: written.last.flatMap { Int($0) } ?? -1)
    }

    static func eventLoopAnswers(_ server: RunningServer) async throws -> Int {
        let text = try await request(server, .GET, "/metrics").text
        let line = text.split(separator: "\n").first { $0.hasPrefix("streamvm_http_event_loop_answers_total ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
    }

    @Test func cachedChunkOverH2CIsAnsweredOnTheEventLoopLikeTheRouter() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = catalogue.chunks[0]
        let url = server.baseURL + "/" + chunk.object.path
        #expect(try await Self.eventLoopAnswers(server) == 0)
        // First read: not verified yet, so the router verifies and answers it.
        let routed = try await Self.exchange(url, scratch: catalogue.base)
        #expect(try await Self.eventLoopAnswers(server) == 0)
        let fast = try await Self.exchange(url, scratch: catalogue.base)
        #expect(try await Self.eventLoopAnswers(server) == 1)
        #expect(routed.status == 200 && fast.status == 200)
        #expect(fast.body == chunk.frame)
        #expect(fast.headers == routed.headers)
        #expect(fast.headers["etag"] == "\"\(chunk.object.digest!.hex)\"")
        #expect(fast.headers["content-length"] == String(chunk.frame.count))
        #expect(fast.headers["cache-control"] == ObjectResponses.immutableCaching)
        // Both chunk reads count as requests, as do the three earlier /metrics reads.
        let metrics = try await request(server, .GET, "/metrics").text
        #expect(metrics.contains("streamvm_http_requests_total{method=\"GET\",status=\"200\"} 5"))
        await server.stop()
    }

    @Test func rangesConditionsAndHeadOnTheEventLoop() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = catalogue.chunks[1]
        let url = server.baseURL + "/" + chunk.object.path
        let size = chunk.frame.count
        _ = try await Self.exchange(url, scratch: catalogue.base)
        let etag = "\"\(chunk.object.digest!.hex)\""

        let range = try await Self.exchange(url, ["-r", "10-109"], scratch: catalogue.base)
        #expect(range.status == 206)
        #expect(range.body == Array(chunk.frame[10...109]))
        #expect(range.headers["content-range"] == "bytes 10-109/\(size)")
        #expect(range.headers["content-length"] == "100")

        let suffix = try await Self.exchange(url, ["-H", "Range: bytes=-5"], scratch: catalogue.base)
        #expect(suffix.status == 206)
        #expect(suffix.body == Array(chunk.frame.suffix(5)))

        let outside = try await Self.exchange(url, ["-H", "Range: bytes=\(size)-"], scratch: catalogue.base)
        #expect(outside.status == 416)
        #expect(outside.headers["content-range"] == "bytes */\(size)")
        #expect(outside.body.isEmpty)

        let notModified = try await Self.exchange(url, ["-H", "If-None-Match: W/\"other\", \(etag)"], scratch: catalogue.base)
        #expect(notModified.status == 304)
        #expect(notModified.body.isEmpty)
        #expect(notModified.headers["etag"] == etag)

        let staleIfRange = try await Self.exchange(url, ["-r", "0-9", "-H", "If-Range: \"stale\""], scratch: catalogue.base)
        #expect(staleIfRange.status == 200)
        #expect(staleIfRange.body == chunk.frame)

        let head = try await Self.exchange(url, ["-I"], scratch: catalogue.base)
        #expect(head.status == 200)
        #expect(head.headers["content-length"] == String(size))
        #expect(head.downloaded == 0)

        #expect(try await Self.eventLoopAnswers(server) == 6)
        await server.stop()
    }

    /// The event loop answers only from the verified copy of the file as it is now: a file rewritten
    /// after it was cached goes back to the router, which verifies it and refuses it.
    @Test func rewrittenObjectIsNotServedFromTheEventLoop() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = catalogue.chunks[2]
        let url = server.baseURL + "/" + chunk.object.path
        _ = try await Self.exchange(url, scratch: catalogue.base)
        #expect(try await Self.exchange(url, scratch: catalogue.base).status == 200)
        #expect(try await Self.eventLoopAnswers(server) == 1)
        var damaged = chunk.frame
        damaged[3] ^= 0x40
        let temporary = catalogue.path(chunk.object) + ".tmp"
        try Data(damaged).write(to: URL(fileURLWithPath: temporary))
        #expect(rename(temporary, catalogue.path(chunk.object)) == 0)
        let refused = try await Self.exchange(url, scratch: catalogue.base)
        #expect(refused.status == 500)
        #expect(refused.body != damaged)
        #expect(try await Self.eventLoopAnswers(server) == 1)
        try FileManager.default.removeItem(atPath: catalogue.path(chunk.object))
        #expect(try await Self.exchange(url, scratch: catalogue.base).status == 404)
        await server.stop()
    }

    /// What the event loop does not own keeps the router: catalog.json, unknown and malformed
    /// targets, other methods, health.
    @Test func everythingElseKeepsTheRouter() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let base = server.baseURL
        for _ in 0..<2 {
            let catalog = try await Self.exchange(base + "/catalog.json", scratch: catalogue.base)
            #expect(catalog.status == 200)
            #expect(catalog.headers["cache-control"] == ObjectResponses.catalogCaching)
        }
        #expect(try await Self.exchange(base + "/chunks/zz/nothing.zst", scratch: catalogue.base).status == 404)
        #expect(try await Self.exchange(base + "/healthz", scratch: catalogue.base).status == 200)
        let chunkURL = base + "/" + catalogue.chunks[0].object.path
        _ = try await Self.exchange(chunkURL, scratch: catalogue.base)
        #expect(try await Self.exchange(chunkURL, ["-X", "DELETE"], scratch: catalogue.base).status == 405)
        #expect(try await Self.eventLoopAnswers(server) == 0)
        await server.stop()
    }

    @Test func cachedChunkOverTLSIsAnsweredOnTheEventLoop() async throws {
        let catalogue = try TestCatalogue()
        let certificate = try await TestCertificate.make(in: catalogue.base)
        let (cert, key) = (certificate.certificate, certificate.key)
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.tlsCertificate = cert
            options.tlsKey = key
        }
        let chunk = catalogue.chunks[3]
        let url = "https://127.0.0.1:\(server.port)/" + chunk.object.path
        let routed = try await Self.exchange(url, scratch: catalogue.base, tls: cert)
        let fast = try await Self.exchange(url, scratch: catalogue.base, tls: cert)
        #expect(fast.status == 200)
        #expect(fast.body == chunk.frame)
        #expect(fast.headers == routed.headers)
        let metrics = try await curl(["--http1.1", "--cacert", cert, "https://127.0.0.1:\(server.port)/metrics"]).output
        #expect(metrics.contains("streamvm_http_event_loop_answers_total 1"))
        await server.stop()
    }
}
