import Catalog
import Dispatch
import Foundation
import Logging

/// Settings of a publish run.
public struct PublishOptions: Sendable {
    /// 64 KiB: the measured sweet spot between ratio, request count and over-fetch (BENCHMARKS.md).
    public static let defaultChunkSize = 64 * 1024

    public var chunkSize = PublishOptions.defaultChunkSize
    public var level = ZstdCompressor.defaultLevel
    /// Train a per-appliance dictionary and use it when it measurably helps.
    public var trainDictionary = true
    /// Replace a version that is already published with different content.
    public var replace = false
    public var workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// Delegate access-order models to this key (`CatalogIndex.modelKey`): the origin that learns then
    /// needs only its private half. nil keeps the catalogue's current delegation.
    public var modelKey: TrustedKey?

    public init() {}
}

/// Turns an appliance directory into content-addressed chunks, a manifest and a signed catalogue entry.
///
/// Order of writes, for crash safety: dictionary, chunks (batched: temp file + rename each, then one
/// syncfs), manifest (fsync), catalog.json last (fsync + atomic rename). A crash leaves either the old
/// catalogue or the new one; chunks left behind by a crashed run are unreferenced, and a chunk torn by
/// a crash is caught because every chunk a publish reuses is verified first and rewritten if damaged.
public final class Publisher {
    let catalog: CatalogDirectory
    let key: SigningKey?
    let options: PublishOptions
    let logger: Logger

    /// Chunks hashed and compressed together; large enough to keep all workers busy.
    static let batchChunks = 64

    public init(catalog: CatalogDirectory, key: SigningKey?, options: PublishOptions = PublishOptions(), logger: Logger) {
        self.catalog = catalog
        self.key = key
        self.options = options
        self.logger = logger
    }

    public func publish(_ appliance: ApplianceDirectory, progress: ProgressHandler? = nil) throws -> PublishSummary {
        let started = DispatchTime.now()
        guard (Manifest.minimumChunkSize...Manifest.maximumChunkSize).contains(options.chunkSize),
              options.chunkSize.nonzeroBitCount == 1 else {
            throw ServerError.invalidApplianceConfig(path: appliance.path, problem: "chunk size \(options.chunkSize) must be a power of two in \(Manifest.minimumChunkSize)...\(Manifest.maximumChunkSize)")
        }
        let existing = try catalog.loadCatalog(trust: .insecure)
        if let existing, existing.signer != key?.publicKey {
            throw ServerError.catalogKeyMismatch(path: catalog.filePath(.catalog))
        }
        let config = appliance.config

        var decision = DictionaryDecision(used: false, digest: nil, sampleChunks: 0, ratioWithout: 0, ratioWith: nil, reason: "disabled")
        var dictionary: ZstdDictionary?
        if options.trainDictionary {
            (dictionary, decision) = try DictionaryTrainer(chunkSize: options.chunkSize, level: options.level)
                .decide(artifacts: appliance.artifacts)
            if let trained = dictionary, let clash = try catalog.dictionary(id: trained.dictionaryID), clash.digest != trained.digest {
                // Frames name dictionaries by a 32-bit ID; two dictionaries with one ID would be ambiguous.
                dictionary = nil
                decision.used = false
                decision.digest = nil
                decision.reason = "trained dictionary's id \(trained.dictionaryID) clashes with \(clash.digest.short); not used"
            }
            logger.info("dictionary", metadata: ["used": "\(decision.used)", "reason": "\(decision.reason)"])
        }
        var bytesStored = 0
        if let dictionary, try catalog.write(.dictionary(dictionary.digest), data: dictionary.bytes) {
            bytesStored += dictionary.bytes.count
        }

        let totalBytes = Int64(appliance.artifacts.reduce(0) { $0 + $1.size })
        var state = RunState(dictionaries: dictionary.map { [$0.digest] } ?? [])
        let workers = try (0..<options.workers).map { _ in try ChunkWorker(level: options.level, dictionary: dictionary, catalog: catalog) }
        var artifacts: [Artifact] = []
        var figures: [PublishSummary.ArtifactFigures] = []
        var done: Int64 = 0
        for file in appliance.artifacts {
            let (artifact, figure) = try chunk(file, workers: workers, state: &state) { bytes in
                done += Int64(bytes)
                progress?(done, totalBytes)
            }
            artifacts.append(artifact)
            figures.append(figure)
        }
        try AtomicFile.syncFileSystem(containing: catalog.root)
        bytesStored += state.newBytes

        let manifest = Manifest(config: config, chunkSize: options.chunkSize, dictionaries: state.dictionaries, artifacts: artifacts)
        let manifestBytes = try manifest.encoded()
        let manifestDigest = Digest.of(manifestBytes)
        if try catalog.write(.manifest(manifestDigest), data: manifestBytes) { bytesStored += manifestBytes.count }

        try updateCatalog(config: config, manifest: manifestDigest, size: Int(totalBytes))

        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        return PublishSummary(
            appliance: config.name, version: config.version, manifest: manifestDigest, chunkSize: options.chunkSize,
            level: options.level, chunks: figures.reduce(0) { $0 + $1.chunks }, newChunks: state.newChunks,
            zeroChunks: figures.reduce(0) { $0 + $1.zeroChunks }, bytesIn: Int(totalBytes), bytesStored: bytesStored,
            compressedBytes: figures.reduce(0) { $0 + $1.storedBytes }, artifacts: figures, dictionary: decision, seconds: seconds)
    }

    /// Adds the version to the index and writes a newly signed catalog.json, unless it is already there.
    /// The catalogue is read again under the catalogue lock: a model learned or a version published
    /// by another process while this one was chunking is kept, not overwritten.
    private func updateCatalog(config: ApplianceConfig, manifest: Digest, size: Int) throws {
        try catalog.withCatalogLock {
            let current = try catalog.loadCatalog(trust: .insecure)
            if let current, current.signer != key?.publicKey {
                throw ServerError.catalogKeyMismatch(path: catalog.filePath(.catalog))
            }
            try updateIndex(current?.index ?? CatalogIndex(), config: config, manifest: manifest, size: size)
        }
    }

    private func updateIndex(_ index: CatalogIndex, config: ApplianceConfig, manifest: Digest, size: Int) throws {
        var index = index
        let delegation = options.modelKey?.base64 ?? index.modelKey
        if let current = index.appliances[config.name]?.versions[config.version] {
            if current.manifest == manifest, delegation == index.modelKey {
                logger.info("already published", metadata: ["appliance": "\(config.name)@\(config.version)"])
                return
            }
            guard current.manifest == manifest || options.replace else {
                throw ServerError.versionConflict(appliance: config.name, version: config.version)
            }
        }
        index.modelKey = delegation
        let version = CatalogIndex.Version(manifest: manifest, size: size, published: Date())
        var entry = index.appliances[config.name] ?? CatalogIndex.Appliance(versions: [:], latest: config.version)
        entry.versions[config.version] = version
        entry.latest = config.version
        index.appliances[config.name] = entry
        index.generation += 1
        let signed = try SignedCatalog(index: index, key: key)
        try catalog.write(.catalog, data: try signed.encoded())
    }

    /// Chunks one artifact in batches: read sequentially, hash and compress in parallel, write in order.
    private func chunk(_ file: (role: ArtifactRole, path: String, size: Int), workers: [ChunkWorker],
                       state: inout RunState, advanced: (Int) -> Void) throws -> (Artifact, PublishSummary.ArtifactFigures) {
        let chunkSize = options.chunkSize
        let reader = try ArtifactReader(path: file.path)
        let chunkCount = (file.size + chunkSize - 1) / chunkSize
        var refs: [ChunkRef?] = []
        refs.reserveCapacity(chunkCount)
        var whole = StreamingDigest()
        var figure = PublishSummary.ArtifactFigures(role: file.role, bytes: file.size, chunks: chunkCount, zeroChunks: 0, storedBytes: 0)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.batchChunks * chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        var first = 0
        while first < chunkCount {
            let count = min(Self.batchChunks, chunkCount - first)
            let batchBytes = min(count * chunkSize, file.size - first * chunkSize)
            try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<batchBytes]), at: first * chunkSize)
            whole.update(UnsafeRawBufferPointer(rebasing: buffer[0..<batchBytes]))
            let results = try process(batch: UnsafeRawBufferPointer(buffer), bytes: batchBytes, count: count, workers: workers, state: state)
            for result in results {
                switch result {
                case .zero:
                    refs.append(nil)
                    figure.zeroChunks += 1
                case .known(let ref):
                    refs.append(ref)
                    figure.storedBytes += ref.stored
                case .existing(let id, let stored, let dictionaryDigest):
                    let ref = ChunkRef(id: id, stored: stored, dict: dictionaryDigest.map { state.dictionaryIndex($0) })
                    state.known[id] = ref
                    refs.append(ref)
                    figure.storedBytes += stored
                case .compressed(let id, let frame, let usedDictionary, let repair):
                    if let ref = state.known[id] {
                        // The same content appeared twice in this batch; store it once.
                        refs.append(ref)
                        figure.storedBytes += ref.stored
                        continue
                    }
                    if repair {
                        logger.warning("rewriting damaged chunk", metadata: ["chunk": "\(id.short)"])
                        try catalog.repair(.chunk(id), data: frame)
                    } else {
                        try catalog.write(.chunk(id), data: frame, durable: false)
                    }
                    let ref = ChunkRef(id: id, stored: frame.count, dict: usedDictionary.map { state.dictionaryIndex($0) })
                    state.known[id] = ref
                    state.newChunks += 1
                    state.newBytes += frame.count
                    refs.append(ref)
                    figure.storedBytes += frame.count
                }
            }
            advanced(batchBytes)
            first += count
        }
        let artifact = Artifact(role: file.role, size: file.size, digest: whole.finalize(), chunks: refs)
        return (artifact, figure)
    }

    /// Hashes every chunk of a batch and compresses (or verifies) the ones the catalogue lacks, spread
    /// over the workers.
    private func process(batch: UnsafeRawBufferPointer, bytes: Int, count: Int, workers: [ChunkWorker],
                         state: RunState) throws -> [ChunkResult] {
        let chunkSize = options.chunkSize
        let results = UnsafeMutableBufferPointer<ChunkResult>.allocate(capacity: count)
        results.initialize(repeating: .zero)
        defer { results.deinitialize(); results.deallocate() }
        let failures = UnsafeMutableBufferPointer<(any Error)?>.allocate(capacity: workers.count)
        failures.initialize(repeating: nil)
        defer { failures.deinitialize(); failures.deallocate() }
        let known = state.known
        // Each worker touches only its own result slots and failure slot, so sharing the buffers is safe.
        nonisolated(unsafe) let (input, output, errors) = (batch, results, failures)
        DispatchQueue.concurrentPerform(iterations: workers.count) { worker in
            do {
                for index in stride(from: worker, to: count, by: workers.count) {
                    let start = index * chunkSize
                    let chunk = UnsafeRawBufferPointer(rebasing: input[start..<min(start + chunkSize, bytes)])
                    output[index] = try workers[worker].process(chunk, known: known)
                }
            } catch {
                errors[worker] = error
            }
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
        return Array(results)
    }
}

/// What the publisher learned about one chunk.
enum ChunkResult {
    case zero
    /// Already seen in this run.
    case known(ChunkRef)
    /// Already in the catalogue and verified; `dictionary` is the one its frame needs.
    case existing(ChunkID, stored: Int, dictionary: Digest?)
    /// Needs storing (`repair`: a damaged copy is in the catalogue and must be replaced).
    case compressed(ChunkID, frame: [UInt8], dictionary: Digest?, repair: Bool)
}

/// Bookkeeping across the artifacts of one publish.
struct RunState {
    var dictionaries: [Digest]
    var known: [ChunkID: ChunkRef] = [:]
    var newChunks = 0
    var newBytes = 0

    mutating func dictionaryIndex(_ digest: Digest) -> Int {
        if let index = dictionaries.firstIndex(of: digest) { return index }
        dictionaries.append(digest)
        return dictionaries.count - 1
    }
}
