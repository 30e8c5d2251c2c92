import Catalog
import Foundation
import Logging
import TestSupport
import Testing
@testable import StreamClient

/// Clients and mirrors with a catalogue that delegates models to a key of their own (models.json).
@Suite struct DelegatedModelTests {
    /// Re-signs the fixture's catalogue delegating models to `modelKey`, stores a valid model of its
    /// disk and a models.json naming it, signed by `signer`. Returns the model's digest.
    static func delegate(_ fixture: FixtureCatalog, to modelKey: SigningKey, indexSignedBy signer: SigningKey) throws -> Digest {
        let directory = try CatalogDirectory(root: fixture.root)
        var index = try #require(try directory.loadCatalog(trust: fixture.trust)).index
        index.modelKey = modelKey.publicKey.base64
        index.generation += 1
        try directory.write(.catalog, data: try SignedCatalog(index: index, key: fixture.key).encoded())
        let touched = fixture.disk.chunks.indices.filter { fixture.disk.chunks[$0] != nil }.prefix(5)
        let cluster = AccessModel.Cluster(chunks: touched.map { ChunkLocation(role: .disk, index: $0) },
                                          bytes: touched.reduce(0) { $0 + (fixture.disk.chunks[$1]?.stored ?? 0) },
                                          support: 1, startSeconds: 0, next: [])
        let model = try AccessModel(appliance: fixture.name, version: "1", manifest: fixture.manifestDigest, runs: 1,
                                    start: [.init(to: 0, probability: 1)], clusters: [cluster]).encoded()
        try directory.write(.model(Digest.of(model)), data: model)
        let models = ModelIndex(generation: 1, models: [fixture.name: Digest.of(model)])
        try directory.write(.modelIndex, data: try SignedModelIndex(index: models, key: signer).encoded())
        return Digest.of(model)
    }

    static func load(_ harness: ClientHarness, _ fixture: FixtureCatalog) async throws -> AccessModel? {
        let (catalog, _) = try await harness.client.loadCatalog()
        return await ModelSource.load(client: harness.client, index: catalog.index, appliance: fixture.name, manifest: fixture.manifest,
                                      manifestDigest: fixture.manifestDigest, logger: ClientHarness.logger)
    }

    @Test func theModelComesFromModelsJsonSignedByTheDelegatedKeyOnly() async throws {
        let directory = try TemporaryDirectory()
        let modelKey = SigningKey()
        let delegated = try FixtureCatalog.make(root: directory.sub("delegated"))
        let digest = try Self.delegate(delegated, to: modelKey, indexSignedBy: modelKey)
        let foreign = try FixtureCatalog.make(root: directory.sub("foreign"))
        _ = try Self.delegate(foreign, to: modelKey, indexSignedBy: SigningKey())
        let (good, bad) = (try HostilePeer(root: delegated.root), try HostilePeer(root: foreign.root))
        defer { good.stop(); bad.stop() }

        let harness = try ClientHarness(origins: [good.url], trust: delegated.trust)
        defer { harness.shutdown() }
        let model = try #require(try await Self.load(harness, delegated))
        #expect(try model.digest == digest)

        // Signed by a key the catalogue does not name: no model (the boot streams on demand).
        let refusing = try ClientHarness(origins: [bad.url], trust: foreign.trust)
        defer { refusing.shutdown() }
        #expect(try await Self.load(refusing, foreign) == nil)
        #expect(bad.requestLog.contains("/models.json"))
        #expect(!bad.requestLog.contains { $0.hasPrefix("/models/") })
    }

    /// A catalogue that delegates models before anything was learned: no models.json yet is not an error.
    @Test func noModelsJsonYetIsNoModelNotAFailure() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"))
        _ = try Self.delegate(fixture, to: SigningKey(), indexSignedBy: SigningKey())
        try FileManager.default.removeItem(atPath: try CatalogDirectory(root: fixture.root).filePath(.modelIndex))
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust)
        defer { harness.shutdown() }
        #expect(try await Self.load(harness, fixture) == nil)
        let modelKey = try #require(try await harness.client.loadCatalog().catalog.index.modelSigningKey)
        do {
            _ = try await harness.client.loadModelIndex(signedBy: modelKey)
            Issue.record("an absent models.json was returned")
        } catch ClientError.notPublished(let object) {
            #expect(object == "models.json")
        }
        // A 404 is an answer: the origin is asked once per load, not retried.
        #expect(peer.requestLog.filter { $0 == "/models.json" }.count == 2)
    }

    @Test func aMirrorCarriesModelsJsonAndTheModelsItNames() async throws {
        let directory = try TemporaryDirectory()
        let modelKey = SigningKey()
        let fixture = try FixtureCatalog.make(root: directory.sub("origin"))
        let digest = try Self.delegate(fixture, to: modelKey, indexSignedBy: modelKey)
        let origin = try HostilePeer(root: fixture.root)
        defer { origin.stop() }
        let harness = try ClientHarness(origins: [origin.url], trust: fixture.trust)
        defer { harness.shutdown() }
        let destination = try CatalogDirectory(root: directory.sub("mirror"), create: true)
        _ = try await CatalogMirror(client: harness.client, destination: destination, logger: ClientHarness.logger).run(appliances: nil)
        #expect(try destination.read(.modelIndex) == (try CatalogDirectory(root: fixture.root).read(.modelIndex)))
        #expect(destination.contains(.model(digest)))

        // A client of the mirror alone gets the delegated model.
        let mirror = try HostilePeer(root: destination.root)
        defer { mirror.stop() }
        let mirrored = try ClientHarness(origins: [mirror.url], trust: fixture.trust)
        defer { mirrored.shutdown() }
        #expect(try await Self.load(mirrored, fixture).map { try $0.digest } == digest)
    }
}
