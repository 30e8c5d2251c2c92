import Catalog
import Foundation
import Hypervisor
import Logging
import StreamBoot
import StreamClient
import StreamServer
import Testing

/// An appliance without a disk (kernel only, or a memory snapshot without a disk) is a shape
/// `streamvm run` starts, so it must go through every step of the chain too: publish, stream-boot
/// in each prefetch mode, fetch whole, mirror, and stream-boot from the mirror.
/// Nested in `StreamBootTests` so its `.serialized` covers both.
extension StreamBootTests {
@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: diskless appliance tests skipped"),
       .timeLimit(.minutes(5)), .serialized)
struct DisklessApplianceTests {
    func boot(_ fixture: StreamBootFixture, reference: String, mode: PrefetchMode, cache: String) async throws -> StreamBootSession.Outcome {
        let loader = try fixture.loader(cache: cache, retry: RetryPolicy(attemptsPerOrigin: 2, backoffSeconds: [0.05]))
        defer { loader.client.fetcher.shutdown() }
        var options = StreamBootSession.Options(reference: reference)
        options.prefetch = mode
        options.timeout = .seconds(120)
        return try await StreamBootSession(loader: loader, options: options, logger: fixture.logger).boot()
    }

    @Test func aKernelOnlyApplianceIsPublishedStreamBootedFetchedAndMirrored() async throws {
        let fixture = try StreamBootFixture(name: "nodisk", commandLine: "mode=hello", sectors: 0)
        let (manifest, kernel) = try Self.publishedManifest(fixture, reference: "nodisk")
        #expect(manifest.artifact(.disk) == nil)
        #expect(manifest.artifacts.map(\.role) == [.kernel])
        try await fixture.startServer()

        for mode in PrefetchMode.allCases {
            let outcome = try await boot(fixture, reference: "nodisk", mode: mode, cache: "cache-\(mode.rawValue)")
            #expect(outcome.reason == .powerOff(code: 0), "\(mode): \(outcome.console)")
            #expect(outcome.console.contains("STREAMVM-READY"), "\(mode): \(outcome.console)")
            #expect(!outcome.report.resumed)
            #expect(outcome.trace.records.allSatisfy { $0.location.role != .disk })
        }

        // `fetch`: the appliance as plain files, the kernel byte for byte and no disk.img.
        let loader = try fixture.loader(cache: "cache-fetch")
        defer { loader.client.fetcher.shutdown() }
        let out = fixture.base + "/fetched"
        let report = try await ApplianceDownloader(loader: loader, logger: fixture.logger).download("nodisk", into: out)
        #expect(report.files.sorted() == ["appliance.json", "kernel"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/kernel")) == kernel)
        #expect(!FileManager.default.fileExists(atPath: out + "/disk.img"))

        // `mirror`, then stream-boot from the mirror alone.
        let mirrorRoot = fixture.base + "/mirror"
        let mirror = CatalogMirror(client: loader.client, destination: try CatalogDirectory(root: mirrorRoot, create: true), logger: fixture.logger)
        let mirrored = try await mirror.run(appliances: nil)
        #expect(mirrored.manifests == 1)
        #expect(mirrored.chunksFetched + mirrored.chunksPresent == manifest.distinctChunks.count)
        await fixture.stopServer()
        try await fixture.startServer(root: mirrorRoot)
        let fromMirror = try await boot(fixture, reference: "nodisk", mode: .vtube, cache: "cache-mirror")
        #expect(fromMirror.reason == .powerOff(code: 0), "\(fromMirror.console)")
        #expect(fromMirror.console.contains("STREAMVM-READY"))
        await fixture.stopServer()
    }

    @Test(.enabled(if: PageFaultHandler.isAvailable, "userfaultfd is not available: diskless resume skipped"))
    func aDisklessMemorySnapshotIsPublishedAndResumedFromTheStream() async throws {
        let fixture = try StreamBootFixture(name: "nodisk-resume", commandLine: "mode=snapshot mib=8", sectors: 0, chunkKiB: 64, snapshot: true)
        let before = try #require(fixture.snapshotChecksum)
        let (manifest, _) = try Self.publishedManifest(fixture, reference: "nodisk-resume")
        #expect(manifest.artifact(.disk) == nil)
        #expect(manifest.artifact(.memory) != nil && manifest.artifact(.state) != nil)
        try await fixture.startServer()
        for mode in [PrefetchMode.none, .vtube] {
            let outcome = try await boot(fixture, reference: "nodisk-resume", mode: mode, cache: "cache-\(mode.rawValue)")
            #expect(outcome.reason == .powerOff(code: 0), "\(mode): \(outcome.console)")
            #expect(outcome.report.resumed)
            #expect(outcome.console.contains("resumed checksum \(before)"), "\(mode): \(outcome.console)")
            #expect(outcome.console.contains("bad pages 0x0000000000000000"), "\(mode): \(outcome.console)")
        }
        await fixture.stopServer()
    }

    /// The manifest the fixture published (read back through the signed chain) and its kernel file.
    static func publishedManifest(_ fixture: StreamBootFixture, reference: String) throws -> (manifest: Manifest, kernel: Data) {
        let signed = try #require(try fixture.catalog.loadCatalog(trust: .key(fixture.key.publicKey)))
        let manifest = try fixture.catalog.loadManifest(try signed.index.resolve(reference).entry.manifest)
        let kernel = try Data(contentsOf: URL(fileURLWithPath: fixture.base + "/appliance/kernel"))
        return (manifest, kernel)
    }
}
}
