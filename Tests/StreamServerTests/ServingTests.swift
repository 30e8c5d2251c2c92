import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamServer

@Suite struct ServingTests {
    @Test func getServesVerifiedChunkWithValidators() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = catalogue.chunks[0]
        let reply = try await request(server, .GET, "/" + chunk.object.path)
        #expect(reply.status == 200)
        #expect(reply.bytes == chunk.frame)
        #expect(reply.headers.first(name: "Content-Length") == String(chunk.frame.count))
        #expect(reply.headers.first(name: "ETag") == "\"\(chunk.object.digest!.hex)\"")
        #expect(reply.headers.first(name: "Cache-Control") == "public, max-age=31536000, immutable")
        #expect(reply.headers.first(name: "Accept-Ranges") == "bytes")
        await server.stop()
    }

    @Test func headRangeAndConditionalRequests() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = catalogue.chunks[1]
        let path = "/" + chunk.object.path
        let etag = "\"\(chunk.object.digest!.hex)\""

        let head = try await request(server, .HEAD, path)
        #expect(head.status == 200)
        #expect(head.bytes.isEmpty)
        #expect(head.headers.first(name: "Content-Length") == String(chunk.frame.count))

        let partial = try await request(server, .GET, path, headers: [("Range", "bytes=10-19")])
        #expect(partial.status == 206)
        #expect(partial.bytes == Array(chunk.frame[10...19]))
        #expect(partial.headers.first(name: "Content-Range") == "bytes 10-19/\(chunk.frame.count)")

        let suffix = try await request(server, .GET, path, headers: [("Range", "bytes=-7")])
        #expect(suffix.status == 206)
        #expect(suffix.bytes == Array(chunk.frame.suffix(7)))

        let outside = try await request(server, .GET, path, headers: [("Range", "bytes=\(chunk.frame.count)-")])
        #expect(outside.status == 416)
        #expect(outside.headers.first(name: "Content-Range") == "bytes */\(chunk.frame.count)")

        let stale = try await request(server, .GET, path, headers: [("Range", "bytes=0-0"), ("If-Range", "\"other\"")])
        #expect(stale.status == 200)
        #expect(stale.bytes == chunk.frame)

        let unchanged = try await request(server, .GET, path, headers: [("If-None-Match", etag)])
        #expect(unchanged.status == 304)
        #expect(unchanged.bytes.isEmpty)
        await server.stop()
    }

    @Test func catalogueIsServedWithRevalidation() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let reply = try await request(server, .GET, "/catalog.json")
        #expect(reply.status == 200)
        #expect(reply.bytes == Array(try catalogue.directory.read(.catalog)))
        #expect(reply.headers.first(name: "Cache-Control") == "no-cache")
        #expect(reply.headers.first(name: "ETag") == "\"\(Digest.of(try catalogue.directory.read(.catalog)).hex)\"")
        let manifest = try await request(server, .GET, "/" + CatalogObject.manifest(catalogue.manifestDigest).path)
        #expect(manifest.status == 200)
        #expect(manifest.bytes == Array(catalogue.manifestBytes))
        await server.stop()
    }

    @Test func healthAndMetrics() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        #expect(try await request(server, .GET, "/healthz").status == 200)
        _ = try await request(server, .GET, "/" + catalogue.chunks[0].object.path)
        _ = try await request(server, .GET, "/nothing-here")
        let metrics = try await request(server, .GET, "/metrics")
        #expect(metrics.status == 200)
        let text = metrics.text
        #expect(text.contains("streamvm_http_requests_total{method=\"GET\",status=\"200\"}"))
        #expect(text.contains("streamvm_http_requests_total{method=\"GET\",status=\"404\"} 1"))
        #expect(text.contains("streamvm_http_request_duration_seconds_bucket"))
        #expect(text.contains("streamvm_http_response_body_bytes_total"))
        #expect(text.contains("streamvm_http_errors_total{kind=\"client\"} 1"))
        #expect(text.contains("streamvm_object_verifications_total{result=\"good\"} 1"))
        #expect(try await request(server, .DELETE, "/catalog.json").status == 405)
        await server.stop()
    }

    /// h2c with prior knowledge and HTTP/1.1 share the plaintext port.
    @Test func plaintextPortSpeaksH2CAndHTTP1() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = catalogue.chunks[2]
        let url = server.baseURL + "/" + chunk.object.path
        let h2 = try await curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}", url])
        #expect(h2.output == "2 200 \(chunk.frame.count)")
        let h2Head = try await curl(["--http2-prior-knowledge", "-I", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", url])
        #expect(h2Head.output == "2 200")
        let h2Range = try await curl(["--http2-prior-knowledge", "-r", "0-99", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}", url])
        #expect(h2Range.output == "2 206 100")
        let h1 = try await curl(["--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}", url])
        #expect(h1.output == "1.1 200 \(chunk.frame.count)")
        await server.stop()
    }

    /// Over TLS, ALPN picks h2 for HTTP/2 clients and HTTP/1.1 for the rest.
    @Test func tlsNegotiatesH2ByALPN() async throws {
        let catalogue = try TestCatalogue()
        let certificate = try await TestCertificate.make(in: catalogue.base)
        let (cert, key) = (certificate.certificate, certificate.key)
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.tlsCertificate = cert
            options.tlsKey = key
        }
        let url = "https://127.0.0.1:\(server.port)/" + catalogue.chunks[0].object.path
        let h2 = try await curl(["--http2", "--cacert", cert, "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}", url])
        #expect(h2.output == "2 200 \(catalogue.chunks[0].frame.count)")
        let h1 = try await curl(["--http1.1", "--cacert", cert, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", url])
        #expect(h1.output == "1.1 200")
        await server.stop()
    }
}
