import Benchmarks
import Catalog
import Foundation
import Logging
import StreamServer
import TestSupport
import Testing
@testable import StreamClient

/// The whole chain with real components: the lead's `Publisher` writes a signed catalogue (with a
/// trained zstd dictionary), nginx serves it over HTTP/2, and the client reads it lazily.
@Suite struct PublishedApplianceTests {
    /// A disk of text-like chunks (so a dictionary is trained), random chunks, zero runs and repeats.
    static func diskImage(chunkSize: Int, chunks: Int) -> [UInt8] {
        var generator = SeededGenerator(seed: 99)
        var bytes = [UInt8](repeating: 0, count: chunkSize * chunks + 777)
        for chunk in 0..<chunks where chunk % 4 != 3 {
            let start = chunk * chunkSize
            if chunk % 4 == 2 {
                for i in 0..<chunkSize { bytes[start + i] = UInt8.random(in: 0...255, using: &generator) }
            } else {
                let text = Array("sector \(chunk) of a published appliance, /usr/lib/x86_64-linux-gnu/libc.so.6\n".utf8)
                for i in 0..<chunkSize { bytes[start + i] = text[(i + chunk) % text.count] }
            }
        }
        for i in (chunks * chunkSize)..<bytes.count { bytes[i] = UInt8(i % 251) }
        return bytes
    }

    /// A published appliance: its catalogue directory, signing key and original disk bytes.
    struct Published {
        let catalogRoot: String
        let key: SigningKey
        let disk: [UInt8]
    }

    /// Publishes a "demo" appliance (16 KiB chunks, level 3, dictionary when it helps) under `directory`.
    static func publish(in directory: TemporaryDirectory, disk makeDisk: ((Int) -> [UInt8])? = nil) async throws -> Published {
        let applianceDirectory = directory.sub("appliance")
        try FileManager.default.createDirectory(atPath: applianceDirectory, withIntermediateDirectories: true)
        let config = #"{"name":"demo","version":"1.0","memoryMiB":64,"vcpus":1,"readyMarker":"STREAMVM-READY"}"#
        try Data(config.utf8).write(to: URL(fileURLWithPath: "\(applianceDirectory)/appliance.json"))
        let chunkSize = 16384
        let disk = makeDisk?(chunkSize) ?? Self.diskImage(chunkSize: chunkSize, chunks: 96)
        try Data(disk).write(to: URL(fileURLWithPath: "\(applianceDirectory)/disk.img"))
        let key = SigningKey()
        var options = PublishOptions()
        options.chunkSize = chunkSize
        options.level = 3
        let catalogRoot = directory.sub("catalog")
        let publishOptions = options
        _ = try await offPool {
            try Publisher(catalog: try CatalogDirectory(root: catalogRoot, create: true), key: key,
                          options: publishOptions, logger: ClientHarness.logger)
                .publish(try ApplianceDirectory(path: applianceDirectory))
        }
        return Published(catalogRoot: catalogRoot, key: key, disk: disk)
    }

    /// 250 random reads, then the whole image, through `LazyImage`: every byte must equal the original.
    static func assertRandomReadsEqual(_ disk: [UInt8], harness: ClientHarness, seed: UInt64 = 5) async throws {
        let (catalog, _) = try await harness.client.loadCatalog()
        let (manifest, _) = try await harness.client.loadManifest(try catalog.index.resolve("demo").entry.manifest)
        let image = try await LazyImage.open(manifest: manifest, role: .disk, loader: harness.loader)
        #expect(image.size == disk.count)
        var generator = SeededGenerator(seed: seed)
        for _ in 0..<250 {
            let offset = Int.random(in: 0..<disk.count, using: &generator)
            let length = Int.random(in: 1...min(50_000, disk.count - offset), using: &generator)
            #expect(try await image.read(offset: offset, length: length) == Array(disk[offset..<(offset + length)]))
        }
        #expect(try await image.read(offset: 0, length: disk.count) == disk)
    }

    @Test(.needsNginx) func randomReadsOfAPublishedApplianceOverNginxEqualTheOriginal() async throws {
        let directory = try TemporaryDirectory()
        let published = try await Self.publish(in: directory)
        let (catalogRoot, key, disk) = (published.catalogRoot, published.key, published.disk)

        let nginx = try #require(try await offPool({ try NginxProcess(root: catalogRoot) }), "nginx is not installed")
        defer { nginx.stop() }
        let harness = try ClientHarness(origins: [nginx.url], trust: .key(key.publicKey), cacheRoot: directory.sub("cache"), stallTimeout: ClientHarness.realPeerStall)
        defer { harness.shutdown() }
        try await Self.assertRandomReadsEqual(disk, harness: harness)
        #expect(nginx.accessLog.allSatisfy { $0.contains("HTTP/2.0") })

        // The same appliance, fully materialised by `fetch`'s downloader, from the same cache.
        let report = try await ApplianceDownloader(loader: harness.loader, logger: ClientHarness.logger)
            .download("demo", into: directory.sub("out"))
        #expect(report.chunksFetched == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.sub("out/disk.img"))) == Data(disk))
    }

    /// Same appliance over h2 with TLS (ALPN): on Debian's libcurl 7.88 this is the path where one
    /// multiplexed connection is reused (the h2c reuse bug does not apply).
    @Test(.needsNginx, .needsOpenSSL) func randomReadsOverNginxWithTLSEqualTheOriginal() async throws {
        let directory = try TemporaryDirectory()
        let certificate = try await TestCertificate.make(in: directory.path)
        let published = try await Self.publish(in: directory)
        let tls = NginxProcess.TLSFiles(certificate: certificate.certificate, key: certificate.key)
        let nginx = try #require(try await offPool({ try NginxProcess(root: published.catalogRoot, tls: tls) }), "nginx is not installed")
        defer { nginx.stop() }
        let harness = try ClientHarness(origins: [nginx.url], trust: .key(published.key.publicKey), cacheRoot: directory.sub("cache"),
                                        stallTimeout: ClientHarness.realPeerStall, caFile: certificate.certificate)
        defer { harness.shutdown() }
        try await Self.assertRandomReadsEqual(published.disk, harness: harness, seed: 6)
        let log = nginx.accessLog
        #expect(!log.isEmpty)
        #expect(log.allSatisfy { $0.contains("HTTP/2.0") })
    }
}
