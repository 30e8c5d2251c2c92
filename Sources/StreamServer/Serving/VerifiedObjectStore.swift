import Catalog
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The server's view of the catalogue: it hands out an object's bytes only after they have been
/// verified against the object's name, and verifies again whenever the file's identity changes.
///
/// The hot path is one `stat` plus one dictionary lookup under a lock; small objects are then served
/// from memory (bytes that were themselves verified), larger ones are read from a descriptor whose
/// identity still matches the verified one.
public final class VerifiedObjectStore: Sendable {
    /// What a lookup found.
    public enum Lookup: Sendable {
        case servable(ServableObject)
        case missing
        /// The file's bytes do not match its name; the reason is safe to log, not to send.
        case corrupt(reason: String)
    }

    public struct Limits: Sendable {
        /// Total bytes of verified object copies kept in memory.
        public var cacheBytes: Int
        /// Objects up to this size are eligible for the memory cache and are answered from memory.
        /// Larger ones are sent from their file in blocks (`ObjectResponses.fileBlockBytes`), the
        /// file's identity checked per block, so a request costs a few blocks of memory however
        /// large the object: reading them whole per request let 100 concurrent streams of one
        /// 32 MiB object pin 1.3 GiB.
        public var cacheObjectBytes: Int

        public init(cacheBytes: Int = 512 << 20, cacheObjectBytes: Int = 1 << 20) {
            self.cacheBytes = cacheBytes
            self.cacheObjectBytes = cacheObjectBytes
        }
    }

    public let directory: CatalogDirectory
    let limits: Limits
    private let trust: SignedCatalog.Trust
    private let verifiers: VerifierPool
    private let threadPool: NIOThreadPool
    private let allocator = ByteBufferAllocator()
    private let state: NIOLockedValueBox<VerificationTable>
    private let logger: Logger
    private let metrics: ServerMetrics?

    public init(directory: CatalogDirectory, trust: SignedCatalog.Trust, limits: Limits = .init(),
                threadPool: NIOThreadPool = .singleton, metrics: ServerMetrics? = nil, logger: Logger) {
        self.directory = directory
        self.trust = trust
        self.limits = limits
        self.verifiers = VerifierPool(directory: directory)
        self.threadPool = threadPool
        self.state = NIOLockedValueBox(VerificationTable(cacheLimit: limits.cacheBytes))
        self.logger = logger
        self.metrics = metrics
    }

    /// Finds, and if needed verifies, `object`.
    public func lookup(_ object: CatalogObject) async throws -> Lookup {
        let path = directory.filePath(object)
        // O_NOFOLLOW-equivalent for the fast path: `stat` follows links, so links are refused by
        // the reader below, and a link never gets an entry in the table.
        guard let identity = FileIdentity.of(path: path) else { return .missing }
        switch state.withLockedValue({ $0.entry(for: object, identity: identity) }) {
        case .verified(let cached?):
            return .servable(ServableObject(object: object, identity: identity, source: .memory(cached.bytes)))
        case .verified(nil) where identity.size > limits.cacheObjectBytes:
            return .servable(ServableObject(object: object, identity: identity, source: .file(path)))
        case .verified(nil):
            // Verified before but not cached: read the same file again, checking its identity.
            let bytes = try await threadPool.runIfActive { [allocator] in
                try ObjectFileReader.readRange(path: path, offset: 0, length: identity.size, expected: identity, allocator: allocator)
            }
            if let bytes {
                cacheIfSmall(object, identity: identity, bytes: bytes)
                return .servable(ServableObject(object: object, identity: identity, source: .memory(bytes)))
            }
            return try await verify(object, path: path)
        case .corrupt(let reason):
            return .corrupt(reason: reason)
        case .unknown:
            return try await verify(object, path: path)
        }
    }

    /// The verified in-memory copy of the object whose canonical request target is exactly `target`
    /// ("/chunks/ab/ab….zst"), if its file is still the one verified: one table lookup under the
    /// lock and one `stat`, nothing that waits on a disk read, so an event loop may ask. Any other
    /// spelling, catalog.json, an object not verified or not cached, or a file changed since gives
    /// nil, and the caller sends the request to the router, which parses, verifies and reports.
    public func verifiedCopy(forTarget target: String) -> VerifiedCopy? {
        guard let copy = state.withLockedValue({ $0.copy(forTarget: target) }) else { return nil }
        guard FileIdentity.of(path: copy.filePath) == copy.identity else { return nil }
        return copy
    }

    /// Reads and verifies `object` now, whatever the table says, and records the verdict. Used by the
    /// scrubber; returns whether the object is good (nil when it is gone).
    func reverify(_ object: CatalogObject) async throws -> Bool? {
        switch try await verify(object, path: directory.filePath(object), keepInCache: false) {
        case .servable: return true
        case .corrupt: return false
        case .missing: return nil
        }
    }

    /// Forgets everything known about `object` (after an upload replaced it).
    func invalidate(_ object: CatalogObject) {
        state.withLockedValue { $0.remove(object) }
    }

    /// Bytes of verified copies currently held in memory.
    public var cachedBytes: Int { state.withLockedValue { $0.cachedBytes } }

    private func verify(_ object: CatalogObject, path: String, keepInCache: Bool = true) async throws -> Lookup {
        let limit = directory.maximumObjectBytes(object)
        let (lookup, identity) = try await threadPool.runIfActive { [allocator, verifiers, trust] () throws -> (Lookup, FileIdentity?) in
            // A file that keeps changing while being read is reported after a few attempts.
            for _ in 0..<3 {
                switch try ObjectFileReader.readWhole(path: path, limit: limit, allocator: allocator) {
                case .missing:
                    return (.missing, nil)
                case .changed:
                    continue
                case .read(let bytes, let identity):
                    do {
                        try verifiers.withVerifier { verifier in
                            try Self.check(object, bytes: bytes, verifier: verifier, trust: trust)
                        }
                    } catch {
                        return (.corrupt(reason: String(describing: error)), identity)
                    }
                    let source: ServableObject.Source = identity.size > self.limits.cacheObjectBytes ? .file(path) : .memory(bytes)
                    return (.servable(ServableObject(object: object, identity: identity, source: source)), identity)
                }
            }
            throw ServerError.unstableFile(path: path)
        }
        switch lookup {
        case .servable: metrics?.recordVerification(good: true)
        case .corrupt: metrics?.recordVerification(good: false)
        case .missing: break
        }
        switch lookup {
        case .servable(let served):
            if case .memory(let bytes) = served.source, keepInCache {
                cacheIfSmall(object, identity: served.identity, bytes: bytes)
            } else {
                state.withLockedValue { $0.record(object, identity: served.identity, verdict: .good, copy: nil) }
            }
        case .corrupt(let reason):
            if let identity {
                state.withLockedValue { $0.record(object, identity: identity, verdict: .corrupt(reason), copy: nil) }
            }
            logger.error("catalogue object is corrupt; refusing to serve it", metadata: [
                "object": "\(object.path)", "problem": "\(reason)",
            ])
        case .missing:
            state.withLockedValue { $0.remove(object) }
        }
        return lookup
    }

    private func cacheIfSmall(_ object: CatalogObject, identity: FileIdentity, bytes: ByteBuffer) {
        let copy = bytes.readableBytes <= limits.cacheObjectBytes
            ? VerifiedCopy(object: object, filePath: directory.filePath(object), identity: identity, bytes: bytes) : nil
        state.withLockedValue { $0.record(object, identity: identity, verdict: .good, copy: copy) }
    }

    /// The check a served object must pass. catalog.json is checked against the server's trust
    /// (signature, and signer when `--trust` is given); everything else against its digest name.
    static func check(_ object: CatalogObject, bytes: ByteBuffer, verifier: ObjectVerifier, trust: SignedCatalog.Trust) throws {
        let data = bytes.getData(at: bytes.readerIndex, length: bytes.readableBytes) ?? .init()
        if object == .catalog {
            _ = try SignedCatalog.decode(data, trust: trust)
        } else {
            try verifier.verify(object, data: data)
        }
    }
}

extension CatalogDirectory {
    /// The largest file the server will read for `object`, from the format's own limits.
    func maximumObjectBytes(_ object: CatalogObject) -> Int {
        switch object {
        case .catalog: return SignedCatalog.maximumBytes
        case .modelIndex: return SignedModelIndex.maximumBytes
        case .manifest, .model: return Manifest.maximumBytes
        case .chunk, .dictionary: return Manifest.maximumChunkSize * 2
        }
    }
}
