import Catalog
import Foundation

/// Turns the traces of many runs of one appliance version into an `AccessModel` (vTube's access
/// clustering, SoCC 2013 §4): chunks that runs touch close together in time form a cluster, ordered
/// by when runs touch them; transitions between clusters carry the fraction of runs that took them.
///
/// Divergent runs (other inputs, another path through the appliance) must help, not poison: chunks
/// most runs touch are clustered by time alone, while chunks only some runs touch are first grouped
/// by exactly which runs touched them, so one odd run's chunks form their own low-support cluster
/// and low-probability transition instead of being spliced into the common path.
///
/// Chunks most runs touched after their ready marker (`RunTrace.readySeconds`) are marked so, and a
/// cluster never mixes them with chunks needed to become ready: vTube buffers only for ready.
public struct AccessModelLearner: Sendable {
    public struct Parameters: Sendable {
        /// A pause longer than this (guest seconds, between median touch times) starts a new cluster.
        /// vTube groups accesses within short intervals; one second separates boot phases well.
        public var burstGapSeconds = 1.0
        /// A cluster is prefetched as a unit; bounding it keeps prediction fine-grained.
        public var maximumClusterBytes = 4 << 20
        /// Chunks touched by at least this fraction of runs belong to the common path.
        public var commonSupport = 0.5
        public init() {}
    }

    public var parameters: Parameters

    public init(parameters: Parameters = Parameters()) { self.parameters = parameters }

    /// Learns from `traces`, which must all be of `manifest` (callers filter with `RunTrace.matches`).
    public func learn(traces: [RunTrace], manifest: Manifest, manifestDigest: Digest) throws -> AccessModel {
        guard let first = traces.first else { throw ServerError.noTraces(appliance: manifest.config.name) }
        let runCount = traces.count
        // Per chunk: (run, touch time, after ready?) for every run that fetched it (zero and overlay
        // chunks cost nothing).
        var touches: [ChunkLocation: [(run: Int, seconds: Double, afterReady: Bool)]] = [:]
        var storedBytes: [ChunkLocation: Int] = [:]
        for (run, trace) in traces.enumerated() {
            for record in trace.records where record.outcome != .zero && record.outcome != .overlay {
                guard let stored = try record.location.ref(in: manifest)?.stored else { continue }
                let afterReady = trace.readySeconds.map { record.wallSeconds > $0 } ?? false
                touches[record.location, default: []].append((run, record.orderSeconds, afterReady))
                storedBytes[record.location] = stored
            }
        }

        // Group chunks: the common path together, the rest by the exact set of runs that touched them.
        struct Member { let location: ChunkLocation; let median: Double; let runs: [Int]; let afterReady: Bool }
        var groups: [[Int]: [Member]] = [:]
        for (location, list) in touches {
            let runs = Array(Set(list.map(\.run))).sorted()
            let afterReadyCount = list.filter(\.afterReady).count
            let member = Member(location: location, median: Self.median(list.map(\.seconds)), runs: runs,
                                afterReady: 2 * afterReadyCount > list.count)
            let support = Double(runs.count) / Double(runCount)
            groups[support >= parameters.commonSupport ? [] : runs, default: []].append(member)
        }

        // Split each group into clusters at pauses, at the size bound and where the ready marker falls.
        var clusterMembers: [[Member]] = []
        for key in groups.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let members = groups[key]!.sorted { ($0.median, $0.location) < ($1.median, $1.location) }
            var current: [Member] = []
            var bytes = 0
            for member in members {
                let size = storedBytes[member.location] ?? 0
                if let last = current.last,
                   member.median - last.median > parameters.burstGapSeconds || bytes + size > parameters.maximumClusterBytes
                   || member.afterReady != last.afterReady {
                    clusterMembers.append(current)
                    current = []
                    bytes = 0
                }
                current.append(member)
                bytes += size
            }
            if !current.isEmpty { clusterMembers.append(current) }
        }

        // Cluster facts, then number clusters by start time (most supported first on ties).
        struct Draft { var chunks: [ChunkLocation]; var bytes: Int; var runs: Set<Int>; var start: Double; var afterReady: Bool }
        var drafts = clusterMembers.map { members in
            Draft(chunks: members.map(\.location), bytes: members.reduce(0) { $0 + (storedBytes[$1.location] ?? 0) },
                  runs: Set(members.flatMap(\.runs)), start: members.map(\.median).min() ?? 0,
                  afterReady: members.allSatisfy(\.afterReady))
        }
        drafts.sort { ($0.start, -$0.runs.count, $0.chunks[0]) < ($1.start, -$1.runs.count, $1.chunks[0]) }
        var clusterOf: [ChunkLocation: Int] = [:]
        for (number, draft) in drafts.enumerated() { for location in draft.chunks { clusterOf[location] = number } }

        // Transitions: the order in which each run entered clusters.
        var startCounts: [Int: Int] = [:]
        var transitionCounts: [Int: [Int: Int]] = [:]
        for trace in traces {
            var entered = Set<Int>()
            var path: [Int] = []
            let fetched = trace.records.filter { $0.outcome != .zero && $0.outcome != .overlay }
            for record in fetched.sorted(by: { ($0.orderSeconds, $0.location) < ($1.orderSeconds, $1.location) }) {
                guard let cluster = clusterOf[record.location], entered.insert(cluster).inserted else { continue }
                path.append(cluster)
            }
            guard let head = path.first else { continue }
            startCounts[head, default: 0] += 1
            for (from, to) in zip(path, path.dropFirst()) { transitionCounts[from, default: [:]][to, default: 0] += 1 }
        }
        func transitions(_ counts: [Int: Int], outOf total: Int) -> [AccessModel.Transition] {
            counts.map { AccessModel.Transition(to: $0.key, probability: Double($0.value) / Double(max(total, 1))) }
                .sorted { ($1.probability, $0.to) < ($0.probability, $1.to) }
        }
        let clusters = drafts.enumerated().map { number, draft in
            AccessModel.Cluster(chunks: draft.chunks, bytes: draft.bytes, support: Double(draft.runs.count) / Double(runCount),
                                startSeconds: draft.start,
                                next: transitions(transitionCounts[number] ?? [:], outOf: draft.runs.count),
                                afterReady: draft.afterReady)
        }
        return AccessModel(appliance: first.appliance, version: first.version, manifest: manifestDigest, runs: runCount,
                           start: transitions(startCounts, outOf: runCount), clusters: clusters)
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}
