import Catalog
import Foundation
import Logging

/// Copies a remote catalogue, or chosen appliances of it, into a local catalogue directory that nginx
/// or `streamvm serve` can serve to clients. Incremental: only objects missing locally are fetched.
/// Verified: every object is checked (through `CatalogClient`) before it is written. Resumable: each
/// object is written atomically, and objects are written before anything that names them (chunks
/// and dictionaries, then models and manifests, then catalog.json, then models.json), so an interrupted run leaves
/// a consistent older mirror plus some extra objects, and the next run fetches only the rest.
///
/// catalog.json is copied byte for byte (it is signed by the publisher); with `--appliance` it still
/// lists appliances this mirror lacks, and clients fail over to another origin for those.
public final class CatalogMirror: Sendable {
    public struct Report: Sendable, Codable {
        public var manifests = 0
        public var chunksFetched = 0
        public var chunksPresent = 0
        public var bytesFetched = 0
        public var generation = 0
    }

    private struct ChunkJob: Sendable {
        let ref: ChunkRef
        let length: Int
        let dictionary: Digest?
    }

    public let client: CatalogClient
    public let destination: CatalogDirectory
    private let logger: Logger
    /// Chunk fetches handed to the fetcher at once; its prefetch window decides how many are on the wire.
    static let chunksOutstanding = 256

    public init(client: CatalogClient, destination: CatalogDirectory, logger: Logger) {
        self.client = client
        self.destination = destination
        self.logger = logger
    }

    /// Mirrors `appliances` (`name` or `name@version`; nil or empty = every version of everything).
    public func run(appliances: [String]?, progress: ProgressHandler? = nil) async throws -> Report {
        let progress = ProgressTally(progress)
        removeAbandonedTempFiles()
        var report = Report()
        var minimumGeneration = 0
        do {
            if let existing = try destination.loadCatalog(trust: client.trust) { minimumGeneration = existing.index.generation }
        } catch {
            logger.warning("existing catalog.json in the mirror is not valid; it will be replaced", metadata: ["error": "\(error)"])
        }
        let (catalog, catalogBytes) = try await client.loadCatalog(minimumGeneration: minimumGeneration)
        report.generation = catalog.index.generation

        var manifestDigests: [Digest] = []
        var modelDigests: Set<Digest> = []
        if let appliances, !appliances.isEmpty {
            for reference in appliances {
                let resolved = try catalog.index.resolve(reference)
                manifestDigests.append(resolved.entry.manifest)
                if let model = catalog.index.appliances[resolved.name]?.model { modelDigests.insert(model) }
            }
        } else {
            manifestDigests = catalog.index.manifests.sorted()
            modelDigests = Set(catalog.index.appliances.values.compactMap(\.model))
        }

        var manifests: [(digest: Digest, manifest: Manifest, bytes: Data?)] = []
        for digest in Set(manifestDigests).sorted() {
            if destination.contains(.manifest(digest)), let local = try? destination.loadManifest(digest) {
                manifests.append((digest, local, nil))
            } else {
                let fetched = try await client.loadManifest(digest)
                manifests.append((digest, fetched.manifest, fetched.bytes))
            }
        }

        var dictionaries: Set<Digest> = []
        var jobs: [ChunkID: ChunkJob] = [:]
        for (_, manifest, _) in manifests {
            dictionaries.formUnion(manifest.dictionaries)
            for artifact in manifest.artifacts {
                for (index, ref) in artifact.chunks.enumerated() {
                    guard let ref, jobs[ref.id] == nil else { continue }
                    jobs[ref.id] = ChunkJob(ref: ref, length: manifest.chunkLength(artifact, index: index),
                                            dictionary: ref.dict.map { manifest.dictionaries[$0] })
                }
            }
        }
        var loadedDictionaries: [Digest: ZstdDictionary] = [:]
        for digest in dictionaries.sorted() {
            let dictionary = try await client.loadDictionary(digest)
            try destination.write(.dictionary(digest), data: dictionary.bytes)
            loadedDictionaries[digest] = dictionary
        }

        let missing = jobs.values.filter { !destination.contains(.chunk($0.ref.id)) }.sorted { $0.ref.id < $1.ref.id }
        report.chunksPresent = jobs.count - missing.count
        progress.add(total: missing.reduce(0) { $0 + $1.ref.stored })
        let counter = ByteCounter()
        let frozenDictionaries = loadedDictionaries
        let ranked = missing.enumerated().map { (rank: Double($0.offset), job: $0.element) }
        try await forEachConcurrently(ranked, limit: Self.chunksOutstanding) { [client, destination] item in
            let job = item.job
            let chunk = try await client.loadChunk(job.ref, length: job.length,
                                                   dictionary: job.dictionary.flatMap { frozenDictionaries[$0] },
                                                   ticket: FetchTicket(priority: .prefetch(rank: item.rank)))
            try destination.write(.chunk(job.ref.id), data: chunk.frame)
            counter.add(chunk.frame.count)
            progress.advance(chunk.frame.count)
        }
        report.chunksFetched = missing.count
        report.bytesFetched = counter.value

        // The delegated model index (signed by the key catalog.json names) and the models it names.
        var modelIndexBytes: Data?
        if let modelKey = catalog.index.modelSigningKey {
            do {
                let (signed, bytes) = try await client.loadModelIndex(signedBy: modelKey)
                let wanted = Set(manifests.map(\.digest))
                for (name, digest) in signed.index.models where appliances?.isEmpty != false
                    || catalog.index.appliances[name]?.versions.values.contains(where: { wanted.contains($0.manifest) }) == true {
                    modelDigests.insert(digest)
                }
                modelIndexBytes = bytes
            } catch ClientError.notPublished {
                logger.info("no models.json published yet; nothing to mirror")
            } catch {
                logger.warning("models.json not mirrored; clients of this mirror stream without delegated models", metadata: ["error": "\(error)"])
            }
        }
        for digest in modelDigests.sorted() where !destination.contains(.model(digest)) {
            try destination.write(.model(digest), data: try await client.loadModel(digest))
        }
        for (digest, _, bytes) in manifests {
            if let bytes { try destination.write(.manifest(digest), data: bytes) }
        }
        report.manifests = manifests.count
        try destination.write(.catalog, data: catalogBytes)
        // After catalog.json, which names the key it must be signed by.
        if let modelIndexBytes { try destination.write(.modelIndex, data: modelIndexBytes) }
        return report
    }

    /// Temp files of a mirror run that was killed (their writer pid is gone).
    private func removeAbandonedTempFiles() {
        var directories = [destination.root]
        for kind in CatalogObject.Kind.allCases {
            let base = "\(destination.root)/\(kind.rawValue)"
            directories.append(base)
            if let shards = try? FileManager.default.contentsOfDirectory(atPath: base) {
                directories += shards.map { "\(base)/\($0)" }
            }
        }
        for directory in directories {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { continue }
            for name in names where TempFileName.isAbandoned(name) { unlink("\(directory)/\(name)") }
        }
    }
}

/// A thread-safe byte tally for reports.
final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0
    func add(_ bytes: Int) {
        lock.lock()
        total += bytes
        lock.unlock()
    }
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return total
    }
}
