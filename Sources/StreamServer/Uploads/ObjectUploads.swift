import Catalog
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOFoundationCompat
import NIOPosix

/// Accepts uploaded catalogue objects. Nothing reaches the catalogue unless its bytes verify against
/// its name first; the write itself is a temp file, fsync and rename, so readers never see a torn file.
public final class ObjectUploads: Sendable {
    public enum Outcome: Equatable, Sendable {
        /// Written now (201).
        case stored
        /// A verified copy was already present (200).
        case alreadyPresent
        /// The body is not the object it claims to be (400).
        case rejected(String)
        /// A valid catalogue that would move the catalogue backwards or name missing objects (409).
        case conflict(String)
    }

    public struct Policy: Sendable {
        /// Signer catalog.json uploads must have; nil accepts any valid signature.
        public var trustedKey: TrustedKey?
        /// Further signers accepted beside `trustedKey` (a host's trust store).
        public var trustedKeys: [TrustedKey] = []
        /// Accept unsigned catalog.json uploads (only for catalogues published without --key).
        public var allowUnsigned: Bool

        public init(trustedKey: TrustedKey? = nil, allowUnsigned: Bool = false) {
            self.trustedKey = trustedKey
            self.allowUnsigned = allowUnsigned
        }

        /// Any of the trusted keys; with none, any valid signature.
        public var catalogTrust: SignedCatalog.Trust {
            let keys = (trustedKey.map { [$0] } ?? []) + trustedKeys
            return keys.isEmpty ? .insecure : .anyOf(keys)
        }
    }

    private let store: VerifiedObjectStore
    private let policy: Policy
    private let verifiers: VerifierPool
    private let threadPool: NIOThreadPool
    /// Serialises catalog.json replacements so two uploads cannot both pass the generation check.
    private let catalogLock = NIOLock()
    private let logger: Logger

    public init(store: VerifiedObjectStore, policy: Policy, threadPool: NIOThreadPool = .singleton, logger: Logger) {
        self.store = store
        self.policy = policy
        self.verifiers = VerifierPool(directory: store.directory, maximumIdle: 2)
        self.threadPool = threadPool
        self.logger = logger
    }

    /// Largest body accepted for `object`.
    public func maximumBodyBytes(_ object: CatalogObject) -> Int { store.directory.maximumObjectBytes(object) }

    public func put(_ object: CatalogObject, body: ByteBuffer) async throws -> Outcome {
        let data = body.getData(at: body.readerIndex, length: body.readableBytes) ?? Data()
        if object == .catalog { return try await putCatalog(data) }
        if object == .modelIndex { return try await putModelIndex(data) }
        if case .servable = try await store.lookup(object) { return .alreadyPresent }
        let directory = store.directory
        let outcome = try await threadPool.runIfActive { [verifiers] () throws -> Outcome in
            do {
                try verifiers.withVerifier { try $0.verify(object, data: data) }
            } catch {
                return .rejected(String(describing: error))
            }
            // A corrupt copy on disk is replaced by the verified upload; a good one was handled above.
            try AtomicFile.write(data, to: directory.filePath(object))
            return .stored
        }
        if outcome == .stored {
            store.invalidate(object)
            logger.info("stored uploaded object", metadata: ["object": "\(object.path)", "bytes": "\(data.count)"])
        }
        return outcome
    }

    /// models.json: accepted only when signed by the model key the served catalog.json delegates to,
    /// when every model it names is here, and when it is not older than the one it replaces.
    private func putModelIndex(_ data: Data) async throws -> Outcome {
        let candidate: SignedModelIndex
        do { candidate = try SignedModelIndex.decode(data, trust: nil, file: "uploaded models.json") } catch {
            return .rejected(String(describing: error))
        }
        let directory = store.directory
        let outcome = try await threadPool.runIfActive { [catalogLock] () throws -> Outcome in
            try catalogLock.withLock { try directory.withCatalogLock {
                guard let catalog = try? directory.loadCatalog(trust: .insecure), catalog.index.modelSigningKey == candidate.signer else {
                    return .conflict("models.json must be signed by the model key catalog.json delegates to; push a catalog.json naming that key first")
                }
                for digest in Set(candidate.index.models.values).sorted() where !directory.contains(.model(digest)) {
                    return .conflict("model \(digest.hex) named by models.json is not on the server; push models before models.json")
                }
                if let current = try? SignedModelIndex.decode(try directory.read(.modelIndex), trust: nil),
                   candidate.index.generation < current.index.generation {
                    return .conflict("models.json generation \(candidate.index.generation) is older than the served generation \(current.index.generation)")
                }
                try directory.write(.modelIndex, data: data)
                return .stored
            } }
        }
        if outcome == .stored {
            store.invalidate(.modelIndex)
            logger.notice("model index replaced by upload", metadata: ["generation": "\(candidate.index.generation)"])
        }
        return outcome
    }

    private func putCatalog(_ data: Data) async throws -> Outcome {
        let candidate: SignedCatalog
        do {
            candidate = try SignedCatalog.decode(data, trust: policy.catalogTrust, file: "uploaded catalog.json")
        } catch {
            return .rejected(String(describing: error))
        }
        if candidate.signature == nil, !policy.allowUnsigned {
            return .rejected("uploaded catalog.json is not signed; publish with --key (or start the server with --allow-unsigned)")
        }
        for digest in Set(candidate.index.manifests).sorted() {
            switch try await store.lookup(.manifest(digest)) {
            case .servable: continue
            case .missing: return .conflict("manifest \(digest.hex) named by the catalogue is not on the server; push manifests before catalog.json")
            case .corrupt: return .conflict("manifest \(digest.hex) named by the catalogue is corrupt on the server; push it again")
            }
        }
        let directory = store.directory
        let outcome = try await threadPool.runIfActive { [catalogLock] () throws -> Outcome in
            // The directory lock also excludes `streamvm publish` and `learn` in other processes.
            try catalogLock.withLock { try directory.withCatalogLock {
                if let current = try? directory.loadCatalog(trust: .insecure), candidate.index.generation < current.index.generation {
                    return .conflict("generation \(candidate.index.generation) is older than the served generation \(current.index.generation)")
                }
                try directory.write(.catalog, data: data)
                return .stored
            } }
        }
        if outcome == .stored {
            store.invalidate(.catalog)
            logger.notice("catalogue replaced by upload", metadata: ["generation": "\(candidate.index.generation)"])
        }
        return outcome
    }
}
