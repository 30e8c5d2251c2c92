import Foundation
import Logging
import Testing
@testable import StreamServer

@Suite struct TraceUploadTests {
    @Test func tracesNeedTheTokenAndAreStoredOutsideTheCatalogue() async throws {
        let catalogue = try TestCatalogue()
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.traceTokenFile = tokenFile }
        let trace = Array(#"{"appliance":"demo","accesses":[[0,1],[5,2]]}"#.utf8)
        #expect(try await request(server, .POST, "/v1/traces/demo", body: trace).status == 401)
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: [("Authorization", "Bearer wrong-token-0123456789")], body: trace).status == 403)
        let auth = [("Authorization", "Bearer \(token)")]
        #expect(try await request(server, .POST, "/v1/traces/.hidden", headers: auth, body: trace).status == 400)
        #expect(try await request(server, .POST, "/v1/traces/a%2Fb", headers: auth, body: trace).status == 400)
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: auth, body: Array("not json".utf8)).status == 400)
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: auth, body: Array("42".utf8)).status == 400)
        // A trace over the cap: OversizedUploadTests.tooLargeTraceIsRefusedHTTP1 (from the head alone;
        // sending 16 MiB here raced the server's early 413 and close).
        let stored = try await request(server, .POST, "/v1/traces/demo", headers: auth, body: trace)
        #expect(stored.status == 201)
        let files = try FileManager.default.contentsOfDirectory(atPath: catalogue.base + "/traces/demo")
        #expect(files.count == 1)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: catalogue.base + "/traces/demo/" + files[0]))) == trace)
        // Traces are never served, and nothing was written into the catalogue.
        #expect(try await request(server, .GET, "/v1/traces/demo").status == 405)
        let catalogueFiles = try FileManager.default.subpathsOfDirectory(atPath: catalogue.directory.root)
        #expect(!catalogueFiles.contains { $0.contains("trace") })
        await server.stop()
    }

    /// Clients that upload traces hold the trace token only: it must not write the catalogue, and the
    /// catalogue write token must not upload traces (each secret does one thing).
    @Test func traceAndCatalogueTokensAreSeparate() async throws {
        let catalogue = try TestCatalogue()
        let (writeFile, writeToken) = try makeTokenFile(in: catalogue, token: "write-token-0123456789abcdef", name: "write.token")
        let (traceFile, traceToken) = try makeTokenFile(in: catalogue, token: "trace-token-0123456789abcdef", name: "trace.token")
        let server = try await RunningServer.start(catalogue: catalogue) {
            $0.tokenFile = writeFile
            $0.traceTokenFile = traceFile
        }
        let trace = Array(#"{"appliance":"demo","accesses":[[0,1]]}"#.utf8)
        let asWriter = [("Authorization", "Bearer \(writeToken)")]
        let asTracer = [("Authorization", "Bearer \(traceToken)")]
        let refusedTrace = try await request(server, .POST, "/v1/traces/demo", headers: asWriter, body: trace)
        #expect(refusedTrace.status == 403)
        #expect(String(decoding: refusedTrace.bytes, as: UTF8.self).contains("not valid for trace uploads"))
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: asTracer, body: trace).status == 201)

        let catalogBefore = try catalogue.directory.read(.catalog)
        let newer = Array(try catalogue.catalogBytes(generation: 2, signedBy: catalogue.key))
        let refusedWrite = try await request(server, .PUT, "/catalog.json", headers: asTracer, body: newer)
        #expect(refusedWrite.status == 403)
        #expect(String(decoding: refusedWrite.bytes, as: UTF8.self).contains("not valid for catalogue writes"))
        let chunk = catalogue.chunks[0]
        try FileManager.default.removeItem(atPath: catalogue.directory.filePath(chunk.object))
        #expect(try await request(server, .PUT, "/" + chunk.object.path, headers: asTracer, body: chunk.frame).status == 403)
        #expect(!FileManager.default.fileExists(atPath: catalogue.directory.filePath(chunk.object)))
        #expect(try catalogue.directory.read(.catalog) == catalogBefore)
        #expect(try await request(server, .PUT, "/catalog.json", headers: asWriter, body: newer).status == 201)
        await server.stop()
    }

    @Test func withoutATraceTokenTraceUploadsAreRefusedEvenWithTheWriteToken() async throws {
        let catalogue = try TestCatalogue()
        let (writeFile, writeToken) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.tokenFile = writeFile }
        let answer = try await request(server, .POST, "/v1/traces/demo", headers: [("Authorization", "Bearer \(writeToken)")],
                                       body: Array(#"{"appliance":"demo"}"#.utf8))
        #expect(answer.status == 403)
        #expect(String(decoding: answer.bytes, as: UTF8.self).contains("--trace-token-file"))
        #expect(!FileManager.default.fileExists(atPath: catalogue.base + "/traces/demo"))
        await server.stop()
    }

    @Test func oneTokenForBothPurposesIsRefusedAtStart() throws {
        let catalogue = try TestCatalogue()
        let (file, _) = try makeTokenFile(in: catalogue)
        var options = CatalogServer.Options(catalog: catalogue.directory.root)
        options.tokenFile = file
        options.traceTokenFile = file
        #expect(throws: ServerError.self) { try CatalogServer(options: options, logger: .init(label: "test")) }
    }

    @Test func traceDirectoryInsideTheCatalogueIsRefused() throws {
        let catalogue = try TestCatalogue()
        var options = CatalogServer.Options(catalog: catalogue.directory.root)
        options.traceDirectory = catalogue.directory.root + "/traces"
        #expect(throws: ServerError.self) { try CatalogServer(options: options, logger: .init(label: "test")) }
    }
}
