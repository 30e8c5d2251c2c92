import Catalog
import Foundation
import Logging
import Testing
@testable import StreamServer

@Suite struct PushTests {
    /// Pushing a catalogue to an empty server copies every object byte for byte; pushing again
    /// uploads nothing.
    @Test func pushCopiesACatalogueAndSkipsWhatIsThere() async throws {
        let source = try TestCatalogue(chunkCount: 5)
        let target = try TestCatalogue(chunkCount: 0)
        // The target starts empty: remove its own manifest and catalogue.
        try FileManager.default.removeItem(atPath: target.directory.root)
        _ = try CatalogDirectory(root: target.directory.root, create: true)
        let (tokenFile, token) = try makeTokenFile(in: target)
        let server = try await RunningServer.start(catalogue: target) { options in
            options.tokenFile = tokenFile
            options.trustedKey = source.key.publicKey
        }
        let pusher = try CatalogPusher(catalog: source.directory.root, url: server.baseURL + "/", token: UploadToken(token, source: "test"),
                                       connections: 2, logger: Logger(label: "test.push"))
        let first = try await pusher.push()
        #expect(first.uploaded == 5 + 1 + 1)
        #expect(first.skipped == 0)
        for object in [CatalogObject.catalog, .manifest(source.manifestDigest)] + source.chunks.map(\.object) {
            #expect(try target.directory.read(object) == source.directory.read(object), "\(object.path) differs")
        }
        let second = try await pusher.push()
        #expect(second.uploaded == 0)
        #expect(second.skipped == 7)
        await server.stop()
    }

    /// A catalogue that delegates models: its models and models.json (after catalog.json, which names
    /// the key the server checks it against) arrive too.
    @Test func pushCarriesModelsJsonAfterTheCatalogue() async throws {
        let source = try TestCatalogue(chunkCount: 2)
        let modelKey = SigningKey()
        try LearningTests.delegate(source, to: modelKey.publicKey)
        let model = Data("{\"a model\":2}".utf8)
        try source.directory.write(.model(Digest.of(model)), data: model)
        let models = ModelIndex(generation: 1, models: ["demo": Digest.of(model)])
        try source.directory.write(.modelIndex, data: try SignedModelIndex(index: models, key: modelKey).encoded())
        let target = try TestCatalogue(chunkCount: 0)
        try FileManager.default.removeItem(atPath: target.directory.root)
        _ = try CatalogDirectory(root: target.directory.root, create: true)
        let (tokenFile, token) = try makeTokenFile(in: target)
        let server = try await RunningServer.start(catalogue: target) { $0.tokenFile = tokenFile }
        let pusher = try CatalogPusher(catalog: source.directory.root, url: server.baseURL, token: UploadToken(token, source: "test"),
                                       logger: Logger(label: "test.push"))
        _ = try await pusher.push()
        for object in [CatalogObject.catalog, .modelIndex, .model(Digest.of(model))] {
            #expect(try target.directory.read(object) == source.directory.read(object), "\(object.path) differs")
        }
        await server.stop()
    }

    @Test func pushWithAWrongTokenFailsClearly() async throws {
        let source = try TestCatalogue(chunkCount: 1)
        let target = try TestCatalogue(chunkCount: 0)
        let (tokenFile, _) = try makeTokenFile(in: target)
        let server = try await RunningServer.start(catalogue: target) { $0.tokenFile = tokenFile }
        let pusher = try CatalogPusher(catalog: source.directory.root, url: server.baseURL, token: UploadToken("not-the-right-token-at-all", source: "test"),
                                       logger: Logger(label: "test.push"))
        await #expect(throws: ServerError.self) { try await pusher.push() }
        await server.stop()
    }

    @Test func pushRefusesNonHTTPURLs() throws {
        let source = try TestCatalogue(chunkCount: 1)
        for url in ["ftp://x/", "https://x/", "not a url", "http:///nohost"] {
            #expect(throws: ServerError.self) {
                try CatalogPusher(catalog: source.directory.root, url: url, token: UploadToken("0123456789abcdef0123", source: "t"), logger: Logger(label: "t"))
            }
        }
    }
}
