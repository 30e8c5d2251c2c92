import Catalog
import Foundation
import Logging

/// What one learning run did, for the CLI and the server log.
public struct LearnReport: Codable, Sendable, Equatable {
    public var appliance: String
    public var version: String
    public var model: Digest
    /// Traces used, and traces skipped with the reason (unreadable, another version, forged).
    public var runs: Int
    public var skipped: [String]
    public var clusters: Int
    public var workingSetBytes: Int
    /// False when the index already named this exact model (nothing was rewritten).
    public var published: Bool
    /// The generation of the index that names the model: models.json's when models are delegated,
    /// catalog.json's otherwise.
    public var generation: Int
}

/// `streamvm learn`: reads the traces of an appliance's current version, learns an access-order model,
/// stores it as a content-addressed object and names it in a signed index, by the usual atomic rename:
/// - with the key the catalogue delegates models to (`CatalogIndex.modelKey`), in models.json, signed
///   by that key; catalog.json is not touched, so the learning origin needs no catalogue key;
/// - with the catalogue's own key, in a newly signed catalog.json (catalogues without delegation).
/// No chunk or manifest is rewritten.
public final class ModelPublisher: Sendable {
    /// Newest traces used at most: enough runs for stable statistics, bounded learning time.
    public static let maximumTraces = 200

    public let catalog: CatalogDirectory
    public let traceRoot: String
    private let key: SigningKey?
    private let learner: AccessModelLearner
    private let logger: Logger
    /// One learning run at a time per publisher (the server may trigger several in a burst).
    private let lock = NSLock()

    public init(catalog: CatalogDirectory, key: SigningKey?, traceRoot: String,
                learner: AccessModelLearner = AccessModelLearner(), logger: Logger) {
        self.catalog = catalog
        self.key = key
        self.traceRoot = (traceRoot as NSString).standardizingPath
        self.learner = learner
        self.logger = logger
    }

    public func learn(appliance reference: String) throws -> LearnReport {
        lock.lock()
        defer { lock.unlock() }
        guard let signed = try catalog.loadCatalog(trust: .insecure) else {
            throw ServerError.invalidOption("\(catalog.root) has no catalog.json; publish the appliance first")
        }
        // The model key the catalogue delegates to, when that is the key this publisher holds.
        let delegatedKey = key.flatMap { signed.index.modelSigningKey == $0.publicKey ? $0 : nil }
        if delegatedKey == nil, signed.signer != key?.publicKey { throw ServerError.learningKeyMismatch(path: catalog.filePath(.catalog)) }
        let resolved = try signed.index.resolve(reference)
        let manifest = try catalog.loadManifest(resolved.entry.manifest)

        var traces: [RunTrace] = []
        var skipped: [String] = []
        for path in traceFiles(appliance: resolved.name).prefix(Self.maximumTraces) {
            let name = (path as NSString).lastPathComponent
            guard let data = FileManager.default.contents(atPath: path) else { skipped.append("\(name): unreadable"); continue }
            do {
                let trace = try RunTrace.decode(data, file: name)
                guard trace.manifest == resolved.entry.manifest, trace.appliance == resolved.name else {
                    skipped.append("\(name): another version"); continue
                }
                guard trace.matches(manifest) else { skipped.append("\(name): names chunks the manifest does not have"); continue }
                traces.append(trace)
            } catch {
                skipped.append("\(name): \(error)")
            }
        }
        guard !traces.isEmpty else { throw ServerError.noTraces(appliance: "\(resolved.name)@\(resolved.version)") }
        let model = try learner.learn(traces: traces, manifest: manifest, manifestDigest: resolved.entry.manifest)
        let bytes = try model.encoded()
        let digest = Digest.of(bytes)
        try catalog.write(.model(digest), data: bytes)

        let (published, generation) = if let delegatedKey {
            try publishDelegated(digest, for: resolved, key: delegatedKey)
        } else {
            try publishInCatalogue(digest, for: resolved)
        }
        logger.info("learned access-order model", metadata: [
            "appliance": "\(resolved.name)@\(resolved.version)", "model": "\(digest.short)", "runs": "\(traces.count)",
            "skipped": "\(skipped.count)", "clusters": "\(model.clusters.count)", "signed_by": "\(delegatedKey == nil ? "catalogue key" : "model key")",
        ])
        return LearnReport(appliance: resolved.name, version: resolved.version, model: digest, runs: traces.count, skipped: skipped,
                           clusters: model.clusters.count, workingSetBytes: model.workingSetBytes, published: published,
                           generation: generation)
    }

    /// Names the model in models.json, signed by the delegated model key. Under the catalogue lock
    /// (every writer of the catalogue's mutable files takes it), from models.json and catalog.json as
    /// they are now. Returns whether models.json changed and its generation.
    private func publishDelegated(_ digest: Digest, for resolved: (name: String, version: String, entry: CatalogIndex.Version),
                                  key: SigningKey) throws -> (Bool, Int) {
        try catalog.withCatalogLock { () throws -> (Bool, Int) in
            guard let latest = try catalog.loadCatalog(trust: .insecure) else {
                throw ServerError.invalidOption("\(catalog.root) lost its catalog.json while learning")
            }
            guard latest.index.modelSigningKey == key.publicKey else { throw ServerError.learningKeyMismatch(path: catalog.filePath(.catalog)) }
            // An existing models.json must be ours; anything else there is refused, not overwritten.
            var index = ModelIndex()
            if catalog.contains(.modelIndex) {
                index = try SignedModelIndex.decode(try catalog.read(.modelIndex), trust: key.publicKey,
                                                    file: catalog.filePath(.modelIndex)).index
            }
            guard latest.index.appliances[resolved.name]?.versions[resolved.version]?.manifest == resolved.entry.manifest else {
                logger.warning("version republished while learning; model not published",
                               metadata: ["appliance": "\(resolved.name)@\(resolved.version)"])
                return (false, index.generation)
            }
            guard index.models[resolved.name] != digest else { return (false, index.generation) }
            index.models[resolved.name] = digest
            index.generation += 1
            try catalog.write(.modelIndex, data: try SignedModelIndex(index: index, key: key).encoded())
            return (true, index.generation)
        }
    }

    /// Names the model in catalog.json, signed by the catalogue key. Read-modify-write under the
    /// catalogue lock, from the catalogue as it is now: a publish that ran while the traces were read
    /// must not be undone.
    private func publishInCatalogue(_ digest: Digest, for resolved: (name: String, version: String, entry: CatalogIndex.Version)) throws -> (Bool, Int) {
        try catalog.withCatalogLock { () throws -> (Bool, Int) in
            guard let latest = try catalog.loadCatalog(trust: .insecure) else {
                throw ServerError.invalidOption("\(catalog.root) lost its catalog.json while learning")
            }
            if latest.signer != key?.publicKey { throw ServerError.catalogKeyMismatch(path: catalog.filePath(.catalog)) }
            var index = latest.index
            // The version was republished meanwhile: this model describes a manifest no longer served.
            guard index.appliances[resolved.name]?.versions[resolved.version]?.manifest == resolved.entry.manifest else {
                logger.warning("version republished while learning; model not published",
                               metadata: ["appliance": "\(resolved.name)@\(resolved.version)"])
                return (false, index.generation)
            }
            guard index.appliances[resolved.name]?.model != digest else { return (false, index.generation) }
            index.appliances[resolved.name]?.model = digest
            index.generation += 1
            try catalog.write(.catalog, data: try SignedCatalog(index: index, key: key).encoded())
            return (true, index.generation)
        }
    }

    /// Trace files of `appliance`, newest first (names start with a UTC timestamp).
    private func traceFiles(appliance: String) -> [String] {
        let directory = "\(traceRoot)/\(appliance)"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.sorted(by: >).map { "\(directory)/\($0)" }
    }
}
