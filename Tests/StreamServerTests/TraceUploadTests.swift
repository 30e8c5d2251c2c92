import Foundation
import Logging
import Testing
@testable import StreamServer

@Suite struct TraceUploadTests {
    @Test func tracesNeedTheTokenAndAreStoredOutsideTheCatalogue() async throws {
        let catalogue = try TestCatalogue()
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.tokenFile = tokenFile }
        let trace = Array(#"{"appliance":"demo","accesses":[[0,1],[5,2]]}"#.utf8)
        #expect(try await request(server, .POST, "/v1/traces/demo", body: trace).status == 401)
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: [("Authorization", "Bearer wrong-token-0123456789")], body: trace).status == 403)
        let auth = [("Authorization", "Bearer \(token)")]
        #expect(try await request(server, .POST, "/v1/traces/.hidden", headers: auth, body: trace).status == 400)
        #expect(try await request(server, .POST, "/v1/traces/a%2Fb", headers: auth, body: trace).status == 400)
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: auth, body: Array("not json".utf8)).status == 400)
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: auth, body: Array("42".utf8)).status == 400)
        let tooBig = [UInt8](repeating: UInt8(ascii: " "), count: TraceStore.maximumTraceBytes + 1)
        #expect(try await request(server, .POST, "/v1/traces/demo", headers: auth, body: tooBig).status == 413)

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

    @Test func traceDirectoryInsideTheCatalogueIsRefused() throws {
        let catalogue = try TestCatalogue()
        var options = CatalogServer.Options(catalog: catalogue.directory.root)
        options.traceDirectory = catalogue.directory.root + "/traces"
        #expect(throws: ServerError.self) { try CatalogServer(options: options, logger: .init(label: "test")) }
    }
}
