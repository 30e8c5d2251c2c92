import Catalog
import Foundation
import Logging
import StreamServer
import Synchronization
import TestSupport
import Testing

/// A scratch appliance and catalogue in a temp directory.
struct PublishFixture {
    let root: String
    var appliance: String { "\(root)/appliance" }
    var catalog: String { "\(root)/catalog" }
    let chunkSize = 16384

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("publish-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(root)/appliance", withIntermediateDirectories: true)
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: root) }

    func writeConfig(version: String = "1.0", extra: String = "") throws {
        let json = #"{"name":"demo","version":"\#(version)","memoryMiB":64,"vcpus":1,"readyMarker":"STREAMVM-READY"\#(extra)}"#
        try Data(json.utf8).write(to: URL(fileURLWithPath: "\(appliance)/appliance.json"))
    }

    /// A disk with compressible data chunks, zero chunks between them and one repeated chunk.
    static func diskImage(chunkSize: Int, chunks: Int, seed: Int = 1) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: chunkSize * chunks + 1000)
        for chunk in stride(from: 0, to: chunks, by: 3) {
            let text = Array("block \(chunk) seed \(seed) lorem ipsum dolor sit amet\n".utf8)
            for i in 0..<chunkSize { bytes[chunk * chunkSize + i] = text[i % text.count] }
        }
        // Chunk 1 repeats chunk 0, so it must be stored once.
        for i in 0..<chunkSize { bytes[chunkSize + i] = bytes[i] }
        for i in (chunks * chunkSize)..<bytes.count { bytes[i] = UInt8(i % 251) }
        return bytes
    }

    func writeArtifact(_ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: "\(appliance)/\(name)"))
    }

    func publish(key: SigningKey?, replace: Bool = false, dictionary: Bool = true) throws -> PublishSummary {
        var options = PublishOptions()
        options.chunkSize = chunkSize
        options.level = 3
        options.replace = replace
        options.trainDictionary = dictionary
        let store = try CatalogDirectory(root: catalog, create: true)
        return try Publisher(catalog: store, key: key, options: options, logger: Logger(label: "test"))
            .publish(try ApplianceDirectory(path: appliance))
    }

    /// Every file under the catalogue with its bytes, to prove a failed publish changed nothing.
    func snapshot() -> [String: Data] {
        var files: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: catalog)
        while let path = enumerator?.nextObject() as? String {
            if let data = FileManager.default.contents(atPath: "\(catalog)/\(path)") { files[path] = data }
        }
        return files
    }

    /// Rebuilds an artifact from the catalogue through the signed chain, as a client would.
    func reassemble(_ role: ArtifactRole, reference: String, trust: TrustedKey) throws -> [UInt8] {
        let store = try CatalogDirectory(root: catalog)
        let signed = try #require(try store.loadCatalog(trust: .key(trust)))
        let manifest = try store.loadManifest(signed.index.resolve(reference).entry.manifest)
        let artifact = try #require(manifest.artifact(role))
        let decompressor = try ZstdDecompressor()
        for digest in manifest.dictionaries { decompressor.add(try store.loadDictionary(digest)) }
        var out = [UInt8]()
        for (index, chunk) in artifact.chunks.enumerated() {
            let length = manifest.chunkLength(artifact, index: index)
            guard let chunk else { out += [UInt8](repeating: 0, count: length); continue }
            let frame = try store.read(.chunk(chunk.id))
            #expect(frame.count == chunk.stored)
            let bytes = try frame.withUnsafeBytes { try decompressor.decompress($0, expectedSize: length, object: "chunk") }
            #expect(Digest.of(bytes) == chunk.id)
            out += bytes
        }
        #expect(Digest.of(out) == artifact.digest)
        return out
    }
}

@Suite struct PublisherTests {
    @Test func publishesAVerifiableSignedCatalogue() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        let disk = PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 30)
        let kernel = PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 2, seed: 7)
        try fixture.writeArtifact("disk.img", disk)
        try fixture.writeArtifact("kernel", kernel)
        let key = SigningKey()
        let summary = try fixture.publish(key: key)
        #expect(summary.chunks == 31 + 3)
        #expect(summary.zeroChunks == 19)  // 31 disk chunks less 10 data chunks, the copy in chunk 1 and the tail
        #expect(try fixture.reassemble(.disk, reference: "demo", trust: key.publicKey) == disk)
        #expect(try fixture.reassemble(.kernel, reference: "demo@1.0", trust: key.publicKey) == kernel)
        // Zero chunks are never stored and the repeated chunk is stored once.
        let store = try CatalogDirectory(root: fixture.catalog)
        let zero = Digest.of([UInt8](repeating: 0, count: fixture.chunkSize))
        #expect(!store.contains(.chunk(zero)))
        let stored = store.objects(of: .chunk).count
        #expect(stored == summary.newChunks)
        #expect(summary.newChunks < summary.chunks - summary.zeroChunks)
    }

    @Test func republishStoresOnlyNewChunks() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        var disk = PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 30)
        try fixture.writeArtifact("disk.img", disk)
        let key = SigningKey()
        let first = try fixture.publish(key: key, dictionary: false)
        let again = try fixture.publish(key: key, dictionary: false)
        #expect(again.newChunks == 0)
        #expect(again.manifest == first.manifest)
        // Version 1.1 changes two chunks: exactly two new chunks are stored.
        disk[5 * fixture.chunkSize] ^= 0xff
        disk[9 * fixture.chunkSize + 17] ^= 0xff
        try fixture.writeArtifact("disk.img", disk)
        try fixture.writeConfig(version: "1.1")
        let second = try fixture.publish(key: key, dictionary: false)
        #expect(second.newChunks == 2)
        let signed = try #require(try CatalogDirectory(root: fixture.catalog).loadCatalog(trust: .key(key.publicKey)))
        #expect(signed.index.appliances["demo"]?.latest == "1.1")
        #expect(signed.index.appliances["demo"]?.versions.count == 2)
        #expect(signed.index.generation == 2)
        #expect(try fixture.reassemble(.disk, reference: "demo@1.1", trust: key.publicKey) == disk)
    }

    /// Another writer (a learner, a second publish) changes catalog.json while this publish is
    /// chunking: the publish must add its version to the catalogue as it is then, not to the one it
    /// read at its start.
    @Test func concurrentCatalogueChangeIsKept() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        try fixture.writeArtifact("disk.img", PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 30))
        let key = SigningKey()
        _ = try fixture.publish(key: key, dictionary: false)

        try fixture.writeConfig(version: "2.0")
        try fixture.writeArtifact("disk.img", PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 30, seed: 2))
        let store = try CatalogDirectory(root: fixture.catalog)
        let model = Digest.of(Array("a model from another process".utf8))
        let changed = Mutex(false)
        var options = PublishOptions()
        options.chunkSize = fixture.chunkSize
        options.trainDictionary = false
        // The progress callback runs mid-publish, after the publisher read catalog.json.
        let summary = try Publisher(catalog: store, key: key, options: options, logger: Logger(label: "test"))
            .publish(try ApplianceDirectory(path: fixture.appliance)) { _, _ in
                guard changed.withLock({ done in defer { done = true }; return !done }) else { return }
                try? store.withCatalogLock {
                    var index = try #require(try store.loadCatalog(trust: .insecure)).index
                    index.appliances["demo"]?.model = model
                    index.generation += 1
                    try store.write(.catalog, data: try SignedCatalog(index: index, key: key).encoded())
                }
            }
        #expect(changed.withLock { $0 })
        let signed = try #require(try store.loadCatalog(trust: .key(key.publicKey)))
        #expect(signed.index.appliances["demo"]?.model == model, "the concurrent change survived")
        #expect(signed.index.appliances["demo"]?.versions["2.0"]?.manifest == summary.manifest)
        #expect(signed.index.appliances["demo"]?.versions["1.0"] != nil)
        #expect(signed.index.generation == 3)
    }

    @Test func catalogueLockExcludesAnotherHolder() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        let store = try CatalogDirectory(root: fixture.catalog, create: true)
        let events = Mutex<[String]>([])
        let holding = DispatchSemaphore(value: 0)
        let holder = Thread {
            // A second descriptor on the directory, as another process would have.
            try? CatalogDirectory(root: fixture.catalog).withCatalogLock {
                holding.signal()
                usleep(200_000)
                events.withLock { $0.append("holder released") }
            }
        }
        holder.start()
        holding.wait()
        try store.withCatalogLock { events.withLock { $0.append("waiter entered") } }
        #expect(events.withLock { $0 } == ["holder released", "waiter entered"])
    }

    @Test func badAppliancesLeaveTheCatalogueUntouched() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        try fixture.writeArtifact("disk.img", PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 6))
        let key = SigningKey()
        _ = try fixture.publish(key: key)
        let before = fixture.snapshot()

        try fixture.writeArtifact("initrd", [])
        #expect(throws: ServerError.self) { try fixture.publish(key: key) }
        try FileManager.default.removeItem(atPath: "\(fixture.appliance)/initrd")

        // Nothing but appliance.json: not an appliance.
        try FileManager.default.removeItem(atPath: "\(fixture.appliance)/disk.img")
        #expect(throws: ServerError.self) { try fixture.publish(key: key) }
        try fixture.writeArtifact("disk.img", PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 6, seed: 2))

        // appliance.json is read by Catalog's ApplianceConfig.load, whose errors name the file and field.
        try Data("{\"name\":\"demo\"".utf8).write(to: URL(fileURLWithPath: "\(fixture.appliance)/appliance.json"))
        #expect(throws: CatalogError.self) { try fixture.publish(key: key) }
        try fixture.writeConfig(extra: #","kernelFormat":"windows""#)
        let error = #expect(throws: CatalogError.self) { try fixture.publish(key: key) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("field kernelFormat: 'windows' is not one of linux, flat"))

        try FileManager.default.createDirectory(atPath: "\(fixture.appliance)/kernel", withIntermediateDirectories: false)
        try fixture.writeConfig(version: "2.0")
        #expect(throws: ServerError.self) { try fixture.publish(key: key) }
        try FileManager.default.removeItem(atPath: "\(fixture.appliance)/kernel")

        // Signed by another key, or unsigned over a signed catalogue: refused.
        #expect(throws: ServerError.self) { try fixture.publish(key: SigningKey()) }
        #expect(throws: ServerError.self) { try fixture.publish(key: nil) }
        #expect(fixture.snapshot() == before)
    }

    /// Kernel + initrd only (no disk.img), a shape `streamvm run` boots: published and rebuilt exactly.
    @Test func anApplianceWithoutADiskIsPublished() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        let kernel = PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 3, seed: 4)
        let initrd = PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 5, seed: 5)
        try fixture.writeArtifact("kernel", kernel)
        try fixture.writeArtifact("initrd", initrd)
        let key = SigningKey()
        let summary = try fixture.publish(key: key)
        #expect(summary.artifacts.map(\.role) == [.kernel, .initrd])
        #expect(try fixture.reassemble(.kernel, reference: "demo", trust: key.publicKey) == kernel)
        #expect(try fixture.reassemble(.initrd, reference: "demo", trust: key.publicKey) == initrd)
        let store = try CatalogDirectory(root: fixture.catalog)
        let signed = try #require(try store.loadCatalog(trust: .key(key.publicKey)))
        #expect(try store.loadManifest(signed.index.resolve("demo").entry.manifest).artifact(.disk) == nil)
    }

    @Test func anApplianceWithNoArtifactIsRefusedNamingTheFilesItNeeds() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        do {
            _ = try fixture.publish(key: SigningKey())
            Issue.record("a directory with only appliance.json was published")
        } catch let error as ServerError {
            #expect(error.description.contains("no artifact to publish"))
            #expect(error.description.contains("kernel") && error.description.contains("disk.img"))
        }
        #expect(!FileManager.default.fileExists(atPath: "\(fixture.catalog)/catalog.json"))
    }

    @Test func changedContentUnderThePublishedVersionIsRefusedUnlessReplacing() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        try fixture.writeArtifact("disk.img", PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 6))
        let key = SigningKey()
        _ = try fixture.publish(key: key)
        let replacement = PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 6, seed: 9)
        try fixture.writeArtifact("disk.img", replacement)
        #expect(throws: ServerError.self) { try fixture.publish(key: key) }
        _ = try fixture.publish(key: key, replace: true)
        #expect(try fixture.reassemble(.disk, reference: "demo@1.0", trust: key.publicKey) == replacement)
    }

    @Test func damagedChunkIsRewrittenOnRepublish() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        let disk = PublishFixture.diskImage(chunkSize: fixture.chunkSize, chunks: 9)
        try fixture.writeArtifact("disk.img", disk)
        let key = SigningKey()
        _ = try fixture.publish(key: key)
        let store = try CatalogDirectory(root: fixture.catalog)
        let victim = try #require(store.objects(of: .chunk).first)
        // A crash after rename but before data reached the disk leaves a torn file.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: store.filePath(victim)))
        let again = try fixture.publish(key: key)
        #expect(again.newChunks == 1)
        #expect(try fixture.reassemble(.disk, reference: "demo", trust: key.publicKey) == disk)
    }

    @Test func dictionaryIsTrainedAndUsedWhenItHelps() throws {
        let fixture = try PublishFixture()
        defer { fixture.cleanup() }
        try fixture.writeConfig()
        // Records from a shared pool: each chunk is mostly first occurrences, so only a dictionary helps.
        let disk = SimilarRecords.disk(bytes: fixture.chunkSize * 64)
        try fixture.writeArtifact("disk.img", disk)
        let key = SigningKey()
        let summary = try fixture.publish(key: key)
        // This fixture is built so the dictionary pays: the test fails if the publisher stops using it.
        #expect(summary.dictionary.used)
        let with = try #require(summary.dictionary.ratioWith)
        #expect(with > summary.dictionary.ratioWithout * 1.03, "held-out ratio with \(with), without \(summary.dictionary.ratioWithout)")
        #expect(try fixture.reassemble(.disk, reference: "demo", trust: key.publicKey) == disk)
    }
}
