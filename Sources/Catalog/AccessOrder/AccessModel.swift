import Foundation

/// A learned access order for one appliance version (vTube, SoCC 2013): clusters of chunks that past
/// runs touched together, each in the order they were touched, when in a run each cluster typically
/// starts, and the probability of moving from one cluster to the next. Published as the
/// content-addressed object `models/<h2>/<sha256>.json`, named by the signed catalogue; learning a
/// new model never republishes a chunk.
public struct AccessModel: Codable, Sendable, Equatable {
    public static let currentFormat = 1

    public struct Transition: Codable, Sendable, Equatable {
        /// Index into `clusters`.
        public var to: Int
        public var probability: Double

        public init(to: Int, probability: Double) {
            self.to = to
            self.probability = probability
        }
    }

    public struct Cluster: Codable, Sendable, Equatable {
        /// Chunks in the order runs touched them (all-zero chunks are left out: they cost nothing).
        public var chunks: [ChunkLocation]
        /// Stored (compressed) bytes of the chunks: what fetching the cluster costs.
        public var bytes: Int
        /// Fraction of runs that touched this cluster.
        public var support: Double
        /// Median guest seconds into a run at which the cluster's first chunk was touched.
        public var startSeconds: Double
        /// Where runs went next after entering this cluster, most likely first.
        public var next: [Transition]
        /// Runs touched this cluster after the appliance printed its ready marker: it is not needed to
        /// become ready, so vTube streams it after the guest starts instead of buffering it.
        /// Absent in models learned before this field existed (read as false).
        public var afterReady: Bool

        public init(chunks: [ChunkLocation], bytes: Int, support: Double, startSeconds: Double, next: [Transition],
                    afterReady: Bool = false) {
            self.chunks = chunks
            self.bytes = bytes
            self.support = support
            self.startSeconds = startSeconds
            self.next = next
            self.afterReady = afterReady
        }

        private enum CodingKeys: String, CodingKey {
            case chunks, bytes, support, startSeconds, next, afterReady
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            chunks = try container.decode([ChunkLocation].self, forKey: .chunks)
            bytes = try container.decode(Int.self, forKey: .bytes)
            support = try container.decode(Double.self, forKey: .support)
            startSeconds = try container.decode(Double.self, forKey: .startSeconds)
            next = try container.decode([Transition].self, forKey: .next)
            afterReady = try container.decodeIfPresent(Bool.self, forKey: .afterReady) ?? false
        }
    }

    public var format: Int
    public var appliance: String
    public var version: String
    /// The manifest whose chunk indices the clusters use; a model for another manifest is stale.
    public var manifest: Digest
    /// Traces the model was learned from.
    public var runs: Int
    /// Which cluster runs entered first.
    public var start: [Transition]
    public var clusters: [Cluster]

    public init(appliance: String, version: String, manifest: Digest, runs: Int, start: [Transition], clusters: [Cluster]) {
        self.format = Self.currentFormat
        self.appliance = appliance
        self.version = version
        self.manifest = manifest
        self.runs = runs
        self.start = start
        self.clusters = clusters
    }

    /// Canonical bytes (sorted keys), so one model always has one digest.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    public var digest: Digest { get throws { Digest.of(try encoded()) } }

    /// Total stored bytes of every cluster (the recorded working set).
    public var workingSetBytes: Int { clusters.reduce(0) { $0 + $1.bytes } }

    /// Parses and checks a model from anywhere. `expected` is the digest the catalogue names; `manifest`
    /// the version it must describe (a model of another version is refused as stale).
    public static func decode(_ data: Data, expected: Digest?, manifest: Manifest, manifestDigest: Digest, file: String) throws -> AccessModel {
        guard data.count <= Manifest.maximumBytes else { throw CatalogError.tooLarge(file: file, size: data.count, limit: Manifest.maximumBytes) }
        if let expected {
            let actual = Digest.of(data)
            guard actual == expected else { throw CatalogError.digestMismatch(object: file, actual: actual.hex) }
        }
        let model: AccessModel
        do { model = try JSONDecoder().decode(AccessModel.self, from: data) } catch {
            throw CatalogError.malformed(file: file, problem: describe(error))
        }
        try model.validate(file: file, manifest: manifest, manifestDigest: manifestDigest)
        return model
    }

    /// Everything a prefetcher relies on: the model is for this manifest, chunk locations exist and
    /// appear once, probabilities are probabilities, transitions name real clusters.
    public func validate(file: String, manifest: Manifest, manifestDigest: Digest) throws {
        func fail(_ problem: String) -> CatalogError { .malformed(file: file, problem: problem) }
        guard format == Self.currentFormat else { throw fail("model format \(format) is not supported (this build reads \(Self.currentFormat))") }
        guard self.manifest == manifestDigest else {
            throw fail("stale: learned for manifest \(self.manifest.short), the version being run is \(manifestDigest.short)")
        }
        guard runs > 0 else { throw fail("learned from \(runs) runs") }
        try Self.checkTransitions(start, clusterCount: clusters.count, what: "start", fail: fail)
        var seen = Set<ChunkLocation>()
        for (number, cluster) in clusters.enumerated() {
            guard !cluster.chunks.isEmpty else { throw fail("cluster \(number) is empty") }
            guard cluster.support.isFinite, (0...1).contains(cluster.support), cluster.startSeconds.isFinite, cluster.startSeconds >= 0 else {
                throw fail("cluster \(number) has impossible support or start time")
            }
            var bytes = 0
            for location in cluster.chunks {
                guard seen.insert(location).inserted else { throw fail("\(location) appears in two clusters") }
                do { bytes += try location.ref(in: manifest)?.stored ?? 0 } catch { throw fail("cluster \(number): \(error)") }
            }
            guard bytes == cluster.bytes else { throw fail("cluster \(number) claims \(cluster.bytes) bytes, its chunks store \(bytes)") }
            try Self.checkTransitions(cluster.next, clusterCount: clusters.count, what: "cluster \(number)", fail: fail)
        }
    }

    private static func checkTransitions(_ transitions: [Transition], clusterCount: Int, what: String,
                                         fail: (String) -> CatalogError) throws {
        var total = 0.0
        for transition in transitions {
            guard (0..<clusterCount).contains(transition.to) else { throw fail("\(what) names cluster \(transition.to) of \(clusterCount)") }
            guard transition.probability.isFinite, transition.probability > 0, transition.probability <= 1 else {
                throw fail("\(what) has transition probability \(transition.probability)")
            }
            total += transition.probability
        }
        // Rounding in the learner's output may add up to a little over one.
        guard total <= 1.000_001 else { throw fail("\(what) transition probabilities add up to \(total)") }
    }
}
