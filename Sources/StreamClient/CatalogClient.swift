import Catalog
import Foundation
import Logging

/// Reads a remote catalogue through its origins and returns only verified objects: the catalogue's
/// signature against the trusted key, manifests, dictionaries and models against their digests,
/// chunks decompressed and hashed. A failed check is treated like a failed transfer: retry, then the
/// next origin, then `ClientError.noUsableOrigin` listing every attempt.
public final class CatalogClient: @unchecked Sendable {
    public let fetcher: Fetcher
    public let trust: SignedCatalog.Trust
    public let retry: RetryPolicy
    /// The host's memory of catalogue generations (boot, fetch); nil: only this run's floor applies.
    public let rollbackProtection: RollbackProtection?
    let pool: OriginPool
    let logger: Logger
    private let decompressors = DecompressorPool()
    private let lock = NSLock()
    private var dictionaries: [Digest: ZstdDictionary] = [:]

    /// Bodies larger than these are refused while downloading.
    static let maximumDictionaryBytes = 4 << 20
    static let maximumModelBytes = 64 << 20

    public var origins: [Origin] { pool.origins }

    public init(origins: [Origin], trust: SignedCatalog.Trust, fetcher: Fetcher, retry: RetryPolicy = RetryPolicy(),
                rollbackProtection: RollbackProtection? = nil, logger: Logger) throws {
        self.pool = try OriginPool(origins)
        self.trust = trust
        self.fetcher = fetcher
        self.retry = retry
        self.rollbackProtection = rollbackProtection
        self.logger = logger
    }

    /// The signed catalogue. An origin serving an older generation than the caller's floor
    /// (`minimumGeneration`: what a mirror's destination already holds) or than this host already
    /// accepted from the same signing key (`rollbackProtection`) counts as failed, so the next origin
    /// is tried: a stale mirror must not roll a client back. The generation accepted is recorded.
    public func loadCatalog(minimumGeneration: Int = 0) async throws -> (catalog: SignedCatalog, bytes: Data) {
        // Read once, before any origin answers: a broken record is the host's problem, not an origin's.
        let seen = try rollbackProtection?.seen.all() ?? [:]
        let loaded = try await fetchVerified(.catalog, maximumBytes: SignedCatalog.maximumBytes, expectedBytes: nil,
                                             ticket: FetchTicket(priority: .demand)) { data, origin in
            let catalog = try SignedCatalog.decode(data, trust: self.trust, file: origin.url(for: .catalog))
            try self.refuseRollback(catalog, from: origin, minimumGeneration: minimumGeneration, seen: seen)
            return (catalog: catalog, bytes: data)
        }
        if let rollbackProtection, let signer = loaded.catalog.signer {
            try rollbackProtection.seen.record(loaded.catalog.index.generation, for: signer)
        }
        return loaded
    }

    /// The one rule for going back, shared by `mirror` (its destination's generation) and `boot` /
    /// `fetch` (the host's record per signing key).
    func refuseRollback(_ catalog: SignedCatalog, from origin: Origin, minimumGeneration: Int, seen: [String: Int]) throws {
        let generation = catalog.index.generation
        guard generation >= minimumGeneration else {
            throw ClientError.staleCatalog(origin: origin.baseURL, generation: generation, minimum: minimumGeneration)
        }
        guard let rollbackProtection, let signer = catalog.signer, let highest = seen[signer.base64], generation < highest else { return }
        let refusal = ClientError.rollback(origin: origin.baseURL, generation: generation, seen: highest, key: signer.base64,
                                           record: rollbackProtection.seen.path)
        guard rollbackProtection.allowRollback else { throw refusal }
        logger.warning("accepting an older catalogue (--allow-rollback)", metadata: ["refusal": "\(refusal)"])
    }

    public func loadManifest(_ digest: Digest) async throws -> (manifest: Manifest, bytes: Data) {
        let object = CatalogObject.manifest(digest)
        return try await fetchVerified(object, maximumBytes: Manifest.maximumBytes, expectedBytes: nil,
                                       ticket: FetchTicket(priority: .demand)) { data, origin in
            (try Manifest.decode(data, expected: digest, file: origin.url(for: object)), data)
        }
    }

    /// A dictionary, fetched once per client and kept.
    public func loadDictionary(_ digest: Digest) async throws -> ZstdDictionary {
        if let known = lock.withLock({ dictionaries[digest] }) { return known }
        let object = CatalogObject.dictionary(digest)
        let dictionary = try await fetchVerified(object, maximumBytes: Self.maximumDictionaryBytes, expectedBytes: nil,
                                                 ticket: FetchTicket(priority: .demand)) { data, origin in
            let dictionary = try ZstdDictionary(bytes: [UInt8](data))
            guard dictionary.digest == digest else {
                throw CatalogError.digestMismatch(object: origin.url(for: object), actual: dictionary.digest.hex)
            }
            return dictionary
        }
        lock.withLock { dictionaries[digest] = dictionary }
        return dictionary
    }

    /// All dictionaries a manifest's chunks may need, in manifest order.
    public func loadDictionaries(for manifest: Manifest) async throws -> [ZstdDictionary] {
        var result: [ZstdDictionary] = []
        for digest in manifest.dictionaries { result.append(try await loadDictionary(digest)) }
        return result
    }

    /// models.json, verified against the model key the catalogue delegates to (`CatalogIndex.modelKey`);
    /// `ClientError.notPublished` when no origin has one (nothing learned yet).
    public func loadModelIndex(signedBy key: TrustedKey) async throws -> (index: SignedModelIndex, bytes: Data) {
        try await fetchVerified(.modelIndex, maximumBytes: SignedModelIndex.maximumBytes, expectedBytes: nil,
                                ticket: FetchTicket(priority: .demand), optional: true) { data, origin in
            (try SignedModelIndex.decode(data, trust: key, file: origin.url(for: .modelIndex)), data)
        }
    }

    public func loadModel(_ digest: Digest) async throws -> Data {
        let object = CatalogObject.model(digest)
        return try await fetchVerified(object, maximumBytes: Self.maximumModelBytes, expectedBytes: nil,
                                       ticket: FetchTicket(priority: .demand)) { data, origin in
            let actual = Digest.of(data)
            guard actual == digest else { throw CatalogError.digestMismatch(object: origin.url(for: object), actual: actual.hex) }
            return data
        }
    }

    /// One chunk, verified: returns the stored frame (for mirrors) and its decompressed bytes.
    /// `length` is the chunk's uncompressed size from the manifest; `dictionary` the one `ref.dict` names.
    public func loadChunk(_ ref: ChunkRef, length: Int, dictionary: ZstdDictionary?,
                          ticket: FetchTicket) async throws -> (frame: Data, bytes: [UInt8]) {
        let object = CatalogObject.chunk(ref.id)
        return try await fetchVerified(object, maximumBytes: ref.stored, expectedBytes: ref.stored, ticket: ticket) { data, _ in
            (data, try ChunkDecoder.decode(frame: data, chunk: ref.id, length: length, dictionary: dictionary, pool: self.decompressors))
        }
    }

    /// Verifies a frame that came from somewhere other than this client (a cache or mirror on disk).
    public func decodeChunk(frame: Data, ref: ChunkRef, length: Int, dictionary: ZstdDictionary?) throws -> [UInt8] {
        try ChunkDecoder.decode(frame: frame, chunk: ref.id, length: length, dictionary: dictionary, pool: decompressors)
    }

    /// The retry and failover loop shared by every object kind.
    /// `optional`: the object need not exist (models.json before anything was learned): a 404 does
    /// not count against the origin, and 404 from every origin throws `ClientError.notPublished`.
    func fetchVerified<T>(_ object: CatalogObject, maximumBytes: Int, expectedBytes: Int?, ticket: FetchTicket, optional: Bool = false,
                          verify: @escaping (Data, Origin) throws -> T) async throws -> T {
        var attempts: [String] = []
        var notFoundEverywhere = true
        for index in pool.order() {
            let origin = pool.origins[index]
            var attempt = 0
            var switchedMode = false
            while attempt < retry.attemptsPerOrigin {
                let pause = retry.backoff(beforeAttempt: attempt)
                if pause > 0 { try await Task.sleep(nanoseconds: UInt64(pause * 1e9)) }
                try Task.checkCancellation()
                let request = FetchRequest(url: origin.url(for: object), priority: ticket.priority, mode: pool.mode(index),
                                           maximumBytes: maximumBytes, expectedBytes: expectedBytes)
                let id = fetcher.makeRequestID()
                ticket.began(id, on: fetcher)
                do {
                    let body = try await fetcher.fetch(request, id: id)
                    ticket.ended()
                    let value = try verify(body.data, origin)
                    pool.succeeded(index, httpVersion: body.httpVersion)
                    return value
                } catch FetchError.cancelled {
                    ticket.ended()
                    throw CancellationError()
                } catch let error as FetchError {
                    ticket.ended()
                    if error == .shutDown { throw error }
                    if !switchedMode, pool.switchMode(index, after: error) {
                        switchedMode = true
                        logger.info("origin does not answer in this HTTP version; switching", metadata: ["origin": "\(origin)"])
                        continue
                    }
                    attempts.append("\(origin): \(error)")
                    if error == .httpStatus(404), optional { break }
                    notFoundEverywhere = false
                    pool.failed(index)
                    logger.debug("fetch failed", metadata: ["object": "\(object)", "origin": "\(origin)", "error": "\(error)"])
                    if error == .httpStatus(404) { break }
                } catch {
                    ticket.ended()
                    if error is CancellationError { throw error }
                    notFoundEverywhere = false
                    attempts.append("\(origin): \(error)")
                    pool.failed(index)
                    logger.warning("object failed verification", metadata: ["object": "\(object)", "origin": "\(origin)", "error": "\(error)"])
                }
                attempt += 1
            }
        }
        if optional, notFoundEverywhere { throw ClientError.notPublished(object: object.path) }
        throw ClientError.noUsableOrigin(object: object.path, attempts: attempts)
    }
}
