import Catalog
import Foundation
import Hypervisor
import Logging
import StreamBoot
import StreamClient
import StreamServer
import Testing

/// The catalogue delegates access-order models to a key of their own (models.json): whoever holds
/// that key (the learning origin, or an attacker who stole it) can change what a boot prefetches and
/// when, never the bytes the guest reads. Nested in `StreamBootTests` so its `.serialized` covers both.
extension StreamBootTests {
@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: model delegation boot tests skipped"),
       .timeLimit(.minutes(5)), .serialized)
struct ModelDelegationTests {
    /// Re-signs the fixture's catalogue (with its own key) delegating models to `modelKey`.
    static func delegate(_ fixture: StreamBootFixture, to modelKey: TrustedKey) throws {
        var index = try #require(try fixture.catalog.loadCatalog(trust: .key(fixture.key.publicKey))).index
        index.modelKey = modelKey.base64
        index.generation += 1
        try fixture.catalog.write(.catalog, data: try SignedCatalog(index: index, key: fixture.key).encoded())
    }

    /// A validly signed, structurally valid, hostile model: one cluster holding every disk chunk in
    /// reverse order, so vtube buffers the whole disk before the guest starts (a slower boot).
    static func poisonedModel(_ fixture: StreamBootFixture, appliance: String) throws -> Digest {
        let signed = try #require(try fixture.catalog.loadCatalog(trust: .key(fixture.key.publicKey)))
        let entry = try signed.index.resolve(appliance).entry
        let manifest = try fixture.catalog.loadManifest(entry.manifest)
        let disk = try #require(manifest.artifact(.disk))
        let indices = disk.chunks.indices.filter { disk.chunks[$0] != nil }.reversed()
        let cluster = AccessModel.Cluster(chunks: indices.map { ChunkLocation(role: .disk, index: $0) },
                                          bytes: indices.reduce(0) { $0 + (disk.chunks[$1]?.stored ?? 0) },
                                          support: 1, startSeconds: 0, next: [])
        let model = AccessModel(appliance: appliance, version: "1", manifest: entry.manifest, runs: 1,
                                start: [.init(to: 0, probability: 1)], clusters: [cluster])
        let bytes = try model.encoded()
        try fixture.catalog.write(.model(Digest.of(bytes)), data: bytes)
        return Digest.of(bytes)
    }

    func boot(_ fixture: StreamBootFixture, cache: String) async throws -> StreamBootSession.Outcome {
        let loader = try fixture.loader(cache: cache, retry: RetryPolicy(attemptsPerOrigin: 2, backoffSeconds: [0.05]))
        defer { loader.client.fetcher.shutdown() }
        var options = StreamBootSession.Options(reference: "blkguest")
        options.prefetch = .vtube
        options.timeout = .seconds(120)
        return try await StreamBootSession(loader: loader, options: options, logger: fixture.logger).boot()
    }

    func expectGuestReadThePublishedBytes(_ outcome: StreamBootSession.Outcome) {
        #expect(outcome.reason == .powerOff(code: 0), "\(outcome.console)")
        // The guest checks every sector it reads against the pattern the host published.
        #expect(outcome.console.contains("ok   sectors 0-7 hold the host's pattern"), "\(outcome.console)")
        #expect(outcome.console.contains("ok   last sector holds the host's pattern"), "\(outcome.console)")
        #expect(!outcome.console.contains("FAIL"), "\(outcome.console)")
    }

    @Test func aPoisonedModelSignedByTheModelKeyChangesWhatIsFetchedNeverAByte() async throws {
        let fixture = try StreamBootFixture(name: "blkguest", commandLine: "mode=blk", sectors: 2048)
        let modelKey = SigningKey()
        try Self.delegate(fixture, to: modelKey.publicKey)
        let digest = try Self.poisonedModel(fixture, appliance: "blkguest")
        try fixture.catalog.write(.modelIndex, data: try SignedModelIndex(index: ModelIndex(generation: 1, models: ["blkguest": digest]),
                                                                          key: modelKey).encoded())
        try await fixture.startServer()
        let outcome = try await boot(fixture, cache: "cache-poisoned")
        expectGuestReadThePublishedBytes(outcome)
        // The poisoned model was used (it had vtube buffer the whole disk up front), yet every byte checked.
        #expect(outcome.report.model == digest.hex)
        await fixture.stopServer()
    }

    @Test func aModelIndexSignedByAnotherKeyIsIgnored() async throws {
        let fixture = try StreamBootFixture(name: "blkguest", commandLine: "mode=blk", sectors: 2048)
        try Self.delegate(fixture, to: SigningKey().publicKey)
        let digest = try Self.poisonedModel(fixture, appliance: "blkguest")
        // Signed by a key the catalogue does not delegate to (e.g. a mirror's own).
        try fixture.catalog.write(.modelIndex, data: try SignedModelIndex(index: ModelIndex(generation: 1, models: ["blkguest": digest]),
                                                                          key: SigningKey()).encoded())
        try await fixture.startServer()
        let outcome = try await boot(fixture, cache: "cache-foreign")
        expectGuestReadThePublishedBytes(outcome)
        #expect(outcome.report.model == nil)
        await fixture.stopServer()
    }
}
}
