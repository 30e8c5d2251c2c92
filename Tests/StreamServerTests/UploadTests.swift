import Catalog
import Foundation
import Testing
@testable import StreamServer

@Suite struct UploadTests {
    /// A chunk that is not yet in the test catalogue, and its frame.
    static func newChunk(seed: UInt64 = 99) throws -> (object: CatalogObject, frame: [UInt8]) {
        let plain = TestCatalogue.chunkBytes(seed: seed)
        return (.chunk(Digest.of(plain)), try ZstdCompressor(level: 3).compress(plain))
    }

    @Test func uploadsNeedTheToken() async throws {
        let catalogue = try TestCatalogue()
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.tokenFile = tokenFile }
        let chunk = try Self.newChunk()
        let path = "/" + chunk.object.path

        let anonymous = try await request(server, .PUT, path, body: chunk.frame)
        #expect(anonymous.status == 401)
        #expect(anonymous.headers.first(name: "WWW-Authenticate")?.hasPrefix("Bearer") == true)
        let basic = try await request(server, .PUT, path, headers: [("Authorization", "Basic dXNlcjpwYXNz")], body: chunk.frame)
        #expect(basic.status == 401)
        let wrong = try await request(server, .PUT, path, headers: [("Authorization", "Bearer \(token)x")], body: chunk.frame)
        #expect(wrong.status == 403)
        let prefix = try await request(server, .PUT, path, headers: [("Authorization", "Bearer \(token.dropLast())")], body: chunk.frame)
        #expect(prefix.status == 403)
        #expect(!FileManager.default.fileExists(atPath: catalogue.path(chunk.object)))
        await server.stop()
    }

    @Test func uploadsAreRefusedWithoutATokenFile() async throws {
        let catalogue = try TestCatalogue()
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = try Self.newChunk()
        let reply = try await request(server, .PUT, "/" + chunk.object.path, headers: [("Authorization", "Bearer anything-at-all-long")], body: chunk.frame)
        #expect(reply.status == 403)
        #expect(!FileManager.default.fileExists(atPath: catalogue.path(chunk.object)))
        await server.stop()
    }

    @Test func bodyThatDoesNotHashToItsNameIsRefusedAndNotStored() async throws {
        let catalogue = try TestCatalogue()
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.tokenFile = tokenFile }
        let auth = [("Authorization", "Bearer \(token)")]
        let chunk = try Self.newChunk()
        let other = try Self.newChunk(seed: 1234)
        let cases: [(String, [UInt8])] = [
            ("/" + chunk.object.path, other.frame),                  // a valid frame of different content
            ("/" + chunk.object.path, Array(chunk.frame.dropLast(5))), // truncated
            ("/" + chunk.object.path, Array("not zstd at all".utf8)),
            ("/" + CatalogObject.manifest(Digest.of(Data("{}".utf8))).path, Array("{}".utf8)), // hashes right, not a manifest
            ("/" + CatalogObject.model(chunk.object.digest!).path, Array("{\"x\":1}".utf8)),
        ]
        for (path, body) in cases {
            let reply = try await request(server, .PUT, path, headers: auth, body: body)
            #expect(reply.status == 400, "\(path) answered \(reply.status)")
        }
        #expect(!FileManager.default.fileExists(atPath: catalogue.path(chunk.object)))
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: catalogue.directory.root).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
        await server.stop()
    }

    @Test func goodUploadIsStoredAndServed() async throws {
        let catalogue = try TestCatalogue()
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.tokenFile = tokenFile }
        let auth = [("Authorization", "Bearer \(token)")]
        let chunk = try Self.newChunk()
        let path = "/" + chunk.object.path
        #expect(try await request(server, .HEAD, path).status == 404)
        let stored = try await request(server, .PUT, path, headers: auth, body: chunk.frame)
        #expect(stored.status == 201)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: catalogue.path(chunk.object)))) == chunk.frame)
        let served = try await request(server, .GET, path)
        #expect(served.status == 200)
        #expect(served.bytes == chunk.frame)
        let again = try await request(server, .PUT, path, headers: auth, body: chunk.frame)
        #expect(again.status == 200)
        await server.stop()
    }

    @Test func corruptStoredCopyIsRepairedByAGoodUpload() async throws {
        let catalogue = try TestCatalogue()
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.tokenFile = tokenFile }
        let chunk = catalogue.chunks[0]
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: catalogue.path(chunk.object)))
        #expect(try await request(server, .GET, "/" + chunk.object.path).status == 500)
        let reply = try await request(server, .PUT, "/" + chunk.object.path, headers: [("Authorization", "Bearer \(token)")], body: chunk.frame)
        #expect(reply.status == 201)
        let served = try await request(server, .GET, "/" + chunk.object.path)
        #expect(served.status == 200)
        #expect(served.bytes == chunk.frame)
        await server.stop()
    }
}

@Suite struct CatalogUploadTests {
    static func server(_ catalogue: TestCatalogue, trust: TrustedKey? = nil, allowUnsigned: Bool = false) async throws -> (RunningServer, [(String, String)]) {
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.tokenFile = tokenFile
            options.trustedKey = trust
            options.allowUnsignedUploads = allowUnsigned
        }
        return (server, [("Authorization", "Bearer \(token)")])
    }

    @Test func validNewerCatalogueReplacesTheServedOne() async throws {
        let catalogue = try TestCatalogue()
        let (server, auth) = try await Self.server(catalogue, trust: catalogue.key.publicKey)
        #expect(try await request(server, .GET, "/catalog.json").status == 200)
        let newer = try catalogue.catalogBytes(generation: 2, signedBy: catalogue.key)
        let reply = try await request(server, .PUT, "/catalog.json", headers: auth, body: Array(newer))
        #expect(reply.status == 201)
        let served = try await request(server, .GET, "/catalog.json")
        #expect(served.bytes == Array(newer))
        await server.stop()
    }

    @Test func badCataloguesAreRefusedAndTheOldOneKept() async throws {
        let catalogue = try TestCatalogue()
        let original = try catalogue.directory.read(.catalog)
        let (server, auth) = try await Self.server(catalogue, trust: catalogue.key.publicKey)
        let stranger = SigningKey()
        var tampered = String(decoding: try catalogue.catalogBytes(generation: 3, signedBy: catalogue.key), as: UTF8.self)
        let payload = try SignedCatalog.decode(Data(tampered.utf8), trust: .insecure).payload.base64EncodedString()
        let otherPayload = try SignedCatalog.decode(catalogue.catalogBytes(generation: 4, signedBy: catalogue.key), trust: .insecure).payload.base64EncodedString()
        tampered = tampered.replacingOccurrences(of: payload, with: otherPayload)
        let cases: [(String, Data, Int)] = [
            ("unsigned", try catalogue.catalogBytes(generation: 5, signedBy: nil), 400),
            ("signed by a stranger", try catalogue.catalogBytes(generation: 5, signedBy: stranger), 400),
            ("tampered payload", Data(tampered.utf8), 400),
            ("not json", Data("{{{".utf8), 400),
            ("names a missing manifest", try catalogue.catalogBytes(generation: 5, signedBy: catalogue.key, manifest: Digest.of(Data("x".utf8))), 409),
            ("older generation", try catalogue.catalogBytes(generation: 0, signedBy: catalogue.key), 409),
        ]
        for (name, body, status) in cases {
            let reply = try await request(server, .PUT, "/catalog.json", headers: auth, body: Array(body))
            #expect(reply.status == status, "\(name): \(reply.status) \(reply.text)")
        }
        #expect(try catalogue.directory.read(.catalog) == original)
        await server.stop()
    }

    @Test func anySignerIsAcceptedWithoutTrustButUnsignedNeedsPermission() async throws {
        let catalogue = try TestCatalogue()
        let (server, auth) = try await Self.server(catalogue)
        let byStranger = try catalogue.catalogBytes(generation: 2, signedBy: SigningKey())
        #expect(try await request(server, .PUT, "/catalog.json", headers: auth, body: Array(byStranger)).status == 201)
        let unsigned = try catalogue.catalogBytes(generation: 3, signedBy: nil)
        #expect(try await request(server, .PUT, "/catalog.json", headers: auth, body: Array(unsigned)).status == 400)
        await server.stop()
        let (permissive, permissiveAuth) = try await Self.server(catalogue, allowUnsigned: true)
        #expect(try await request(permissive, .PUT, "/catalog.json", headers: permissiveAuth, body: Array(unsigned)).status == 201)
        await permissive.stop()
    }
}

/// models.json uploads (a push of a catalogue with delegated models): only from the key the served
/// catalog.json delegates to, never older than the served one, never naming a model the server lacks.
@Suite struct ModelIndexUploadTests {
    @Test func onlyTheDelegatedKeyMayReplaceModelsJson() async throws {
        let catalogue = try TestCatalogue()
        let modelKey = SigningKey()
        try LearningTests.delegate(catalogue, to: modelKey.publicKey)
        let (tokenFile, token) = try makeTokenFile(in: catalogue)
        let server = try await RunningServer.start(catalogue: catalogue) { $0.tokenFile = tokenFile }
        let auth = [("Authorization", "Bearer \(token)")]
        let model = Array("{\"a model\":1}".utf8)
        let modelDigest = Digest.of(model)
        func index(_ generation: Int, signedBy key: SigningKey) throws -> [UInt8] {
            Array(try SignedModelIndex(index: ModelIndex(generation: generation, models: ["demo": modelDigest]), key: key).encoded())
        }

        // The model it names is not on the server yet.
        #expect(try await request(server, .PUT, "/models.json", headers: auth, body: try index(2, signedBy: modelKey)).status == 409)
        #expect(try await request(server, .PUT, "/" + CatalogObject.model(modelDigest).path, headers: auth, body: model).status == 201)
        // Another key's index, or garbage, is refused.
        #expect(try await request(server, .PUT, "/models.json", headers: auth, body: try index(2, signedBy: SigningKey())).status == 409)
        #expect(try await request(server, .PUT, "/models.json", headers: auth, body: Array("{}".utf8)).status == 400)
        #expect(!catalogue.directory.contains(.modelIndex))

        #expect(try await request(server, .PUT, "/models.json", headers: auth, body: try index(2, signedBy: modelKey)).status == 201)
        let served = try await request(server, .GET, "/models.json")
        #expect(try SignedModelIndex.decode(Data(served.bytes), trust: modelKey.publicKey).index.models["demo"] == modelDigest)
        // Going back a generation is refused; the served index stays.
        #expect(try await request(server, .PUT, "/models.json", headers: auth, body: try index(1, signedBy: modelKey)).status == 409)
        #expect(try SignedModelIndex.decode(try catalogue.directory.read(.modelIndex), trust: modelKey.publicKey).index.generation == 2)
        await server.stop()
    }
}
