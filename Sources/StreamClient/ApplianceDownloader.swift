import Catalog
import Foundation
import Logging

/// Materialises one appliance version as plain files (`appliance.json`, `disk.img`, …): the "full
/// download" baseline. Chunks are fetched concurrently and verified one by one, each artifact is
/// written to a temp file, checked end to end against its digest, then renamed into place.
public final class ApplianceDownloader: Sendable {
    public struct Report: Sendable, Codable {
        public var appliance: String
        public var version: String
        public var files: [String]
        public var bytesWritten: Int
        public var chunksFetched: Int
    }

    public let loader: ChunkRouter
    private let logger: Logger
    static let chunksOutstanding = 256

    public init(loader: ChunkRouter, logger: Logger) {
        self.loader = loader
        self.logger = logger
    }

    public func download(_ reference: String, into directory: String, progress handler: ProgressHandler? = nil) async throws -> Report {
        let progress = ProgressTally(handler)
        let client = loader.client
        let (catalog, _) = try await client.loadCatalog()
        let resolved = try catalog.index.resolve(reference)
        let (manifest, _) = try await client.loadManifest(resolved.entry.manifest)
        let dictionaries = try await client.loadDictionaries(for: manifest)
        try AtomicFile.makeDirectories(directory)
        removeAbandonedTempFiles(in: directory)
        progress.add(total: manifest.artifacts.reduce(0) { $0 + $1.storedBytes })
        var report = Report(appliance: resolved.name, version: resolved.version, files: [], bytesWritten: 0, chunksFetched: 0)
        let fetched = FetchedChunks()
        for artifact in manifest.artifacts {
            let target = "\(directory)/\(artifact.role.fileName)"
            try await write(artifact, of: manifest, dictionaries: dictionaries, to: target, progress: progress, fetched: fetched)
            report.files.append(artifact.role.fileName)
            report.bytesWritten += artifact.size
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(manifest.config), to: "\(directory)/appliance.json")
        report.files.append("appliance.json")
        report.chunksFetched = fetched.count
        return report
    }

    private func write(_ artifact: Artifact, of manifest: Manifest, dictionaries: [ZstdDictionary], to target: String,
                       progress: ProgressTally, fetched: FetchedChunks) async throws {
        let temp = "\((target as NSString).deletingLastPathComponent)/.tmp-\((target as NSString).lastPathComponent)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ClientError.io(path: temp, errno: errno) }
        var renamed = false
        defer {
            close(fd)
            if !renamed { unlink(temp) }
        }
        // Zero chunks stay holes of the sparse file.
        guard ftruncate(fd, off_t(artifact.size)) == 0 else { throw ClientError.io(path: temp, errno: errno) }
        let jobs = artifact.chunks.enumerated().compactMap { index, ref in ref.map { (index: index, ref: $0) } }
        let loader = self.loader
        try await forEachConcurrently(jobs, limit: Self.chunksOutstanding) { job in
            let length = manifest.chunkLength(artifact, index: job.index)
            let loaded = try await loader.load(job.ref, length: length, dictionary: job.ref.dict.map { dictionaries[$0] },
                                               priority: .prefetch(rank: Double(job.index)))
            try loaded.bytes.withUnsafeBytes { try pwriteFully(fd, $0, offset: job.index * manifest.chunkSize, path: temp) }
            if loaded.fetched { fetched.insert(job.ref.id) }
            progress.advance(job.ref.stored)
        }
        // Every chunk was verified; the whole-file digest also proves the manifest's chunk order.
        let actual = try Self.digest(fd: fd, size: artifact.size, path: temp)
        guard actual == artifact.digest else {
            throw CatalogError.digestMismatch(object: "\(artifact.role.rawValue) artifact", actual: actual.hex)
        }
        guard fsync(fd) == 0 else { throw ClientError.io(path: temp, errno: errno) }
        guard rename(temp, target) == 0 else { throw ClientError.io(path: target, errno: errno) }
        renamed = true
        try AtomicFile.syncDirectory((target as NSString).deletingLastPathComponent)
    }

    /// Temp files of a killed earlier run (their writer pid is gone): sparse images that would
    /// otherwise stay behind. Artifacts only appear under their real names when complete.
    private func removeAbandonedTempFiles(in directory: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where TempFileName.isAbandoned(name) {
            unlink("\(directory)/\(name)")
            logger.info("removed a killed run's temp file", metadata: ["file": "\(name)"])
        }
    }

    static func digest(fd: Int32, size: Int, path: String) throws -> Digest {
        var hasher = StreamingDigest()
        let block = 4 << 20
        var buffer = [UInt8](repeating: 0, count: block)
        var offset = 0
        while offset < size {
            let count = min(block, size - offset)
            let ok = buffer.withUnsafeMutableBytes { preadFully(fd, UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]), offset: offset) }
            guard ok else { throw ClientError.io(path: path, errno: EIO) }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            offset += count
        }
        return hasher.finalize()
    }
}

/// Distinct chunks that came over the network (a chunk used twice, or joined while in flight, counts once).
final class FetchedChunks: @unchecked Sendable {
    private let lock = NSLock()
    private var chunks: Set<ChunkID> = []
    func insert(_ chunk: ChunkID) { lock.withLock { _ = chunks.insert(chunk) } }
    var count: Int { lock.withLock { chunks.count } }
}
