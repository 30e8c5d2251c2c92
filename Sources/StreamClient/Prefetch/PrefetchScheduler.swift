import Catalog

/// Decides what to fetch ahead of the guest and when the guest may start. A pure value type over an
/// injected `Clock` (swift-nio / Hummingbird style): events go in, `Action`s come out, and the
/// driver performs them, so every policy below is tested with a manual clock and no network.
///
/// - Start: `none` starts at once; `full` and `workingset` (REAP) after the whole image or recorded
///   working set is local; `vtube` after just enough of the predicted path is buffered that the rest
///   can stream in before the guest needs it at the measured bandwidth (vTube §4.3), over the
///   clusters before ready (`StartupBuffer.ready`, the default) or the whole predicted path (`.path`).
/// - Running: chunks are issued in plan order while the bytes outstanding stay under a few
///   bandwidth-delay products, which keeps the link full without burying the next demand miss
///   (the fetcher always starts demand requests first). Entering a model cluster makes its rest and
///   its likely successors urgent; outstanding prefetches of clusters now off the path are cancelled.
/// - Sequential unmodelled misses get readahead (random ones do not). After the predicted path, the rest of the working
///   set (or, with `complete`, the whole image) streams in the background.
public struct PrefetchScheduler<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    public enum Action: Equatable, Sendable {
        case fetch(ChunkLocation, rank: Double)
        case cancel(ChunkLocation)
        /// The guest may run now; `bufferedBytes` were local when it started.
        case startGuest(bufferedBytes: Int)
    }

    public struct Configuration: Sendable {
        public var mode: PrefetchMode
        /// Stream the whole image in the background, not just the working set.
        public var complete = false
        /// Chunks read ahead after an unmodelled demand miss (8 × 64 KiB = 512 KiB, a few Linux readahead windows).
        public var readaheadChunks = 8
        /// Bandwidth assumed before the link is measured: low, so early buffering errs on the safe side.
        public var assumedBytesPerSecond = 256.0 * 1024
        /// Outstanding prefetch bytes = this many bandwidth-delay products (the fetcher itself admits ~1.5).
        public var outstandingBDPs = 4.0
        public var minimumOutstandingBytes = 2 << 20
        /// Clusters reached with a lower probability are not streamed ahead (only in the background).
        public var minimumTransitionProbability = 0.1
        /// Bytes of predicted successors made urgent when the guest enters a cluster.
        public var lookaheadBytes = 8 << 20
        /// The guest starts after this long even if buffering is not done (a slow link must not hang boot).
        public var maximumBuffering: Duration = .seconds(120)
        /// What vtube's startup buffer is sized for (`StartupBuffer`).
        public var startupBuffer = StartupBuffer.ready

        public init(mode: PrefetchMode) { self.mode = mode }
    }

    public let configuration: Configuration
    private let clock: C
    private let chunks: StreamedChunks
    private let model: AccessModel?
    private var clusterOf: [ChunkLocation: Int] = [:]

    private var local: Set<ChunkLocation>
    private var outstanding: [ChunkLocation: Int] = [:]
    /// When each chunk was last issued (`sequence`), to requeue cancelled ones in plan order.
    private var issueOrder: [ChunkLocation: Int] = [:]
    private var outstandingBytes = 0
    private var failures: [ChunkLocation: Int] = [:]
    /// Urgent work (current cluster, predicted successors, readahead), served before `background`.
    private var urgent: [ChunkLocation] = []
    private var urgentHead = 0
    private var background: [ChunkLocation] = []
    private var backgroundHead = 0
    private var hot: Set<Int> = []
    /// Chunks read ahead (touching one extends the window) and the last first touch per artifact.
    private var readahead: Set<ChunkLocation> = []
    private var lastTouch: [ArtifactRole: Int] = [:]
    private var entered: Set<Int> = []
    private var epoch = 0
    private var sequence = 0

    // Startup buffering.
    private var startupPath: [Int] = []
    private var startupSet: Set<ChunkLocation> = []
    private var startupPendingBytes = 0
    private var bufferedBytes = 0
    private var bytesPerSecond: Double
    /// Goodput of this run's prefetches: bytes completed since the first fetch was issued.
    private var firstIssue: C.Instant?
    private var completedBytes = 0
    private var rttSeconds = 0.0
    private(set) public var bufferingStarted: C.Instant?
    private(set) public var guestStarted: C.Instant?

    /// Chunks of a run fail at most this often before the scheduler leaves them to demand fetches.
    static var maximumFailures: Int { 3 }

    public init(configuration: Configuration, chunks: StreamedChunks, model: AccessModel?, local: Set<ChunkLocation>, clock: C) {
        self.configuration = configuration
        self.chunks = chunks
        self.model = configuration.mode == .none || configuration.mode == .full ? nil : model
        self.local = local
        self.clock = clock
        bytesPerSecond = configuration.assumedBytesPerSecond
        if let model = self.model {
            for (number, cluster) in model.clusters.enumerated() { for location in cluster.chunks { clusterOf[location] = number } }
        }
    }

    public var isGuestStarted: Bool { guestStarted != nil }
    /// Bytes the startup rule currently asks for before the guest may run.
    public var bufferTargetBytes: Int { startupTarget() }
    public var bufferedStartupBytes: Int { bufferedBytes }
    /// Nothing outstanding and nothing left to issue.
    public var isIdle: Bool { outstanding.isEmpty && !hasCandidate() }
    public var outstandingLocations: Set<ChunkLocation> { Set(outstanding.keys) }

    // MARK: events

    /// Plans the run and issues the first fetches; may start the guest at once.
    public mutating func start() -> [Action] {
        bufferingStarted = clock.now
        let all = chunks.allFetchable
        switch configuration.mode {
        case .none:
            background = configuration.complete ? all : []
        case .full:
            background = all
            startupSet = Set(all)
        case .workingset:
            let working = model.map { model in
                model.clusters.indices.sorted { model.clusters[$0].startSeconds < model.clusters[$1].startSeconds }
                    .flatMap { model.clusters[$0].chunks }
            } ?? []
            startupSet = Set(working)
            background = working + (configuration.complete ? all : [])
        case .vtube:
            if let model {
                startupPath = predictedPath(model)
                let onPath = Set(startupPath)
                // Then the rest of the working set, most supported first.
                let rest = model.clusters.indices.filter { !onPath.contains($0) }
                    .sorted { (-model.clusters[$0].support, model.clusters[$0].startSeconds) < (-model.clusters[$1].support, model.clusters[$1].startSeconds) }
                background = (startupPath + rest).flatMap { model.clusters[$0].chunks } + (configuration.complete ? all : [])
                startupSet = Set(startupPath.filter(countsForStartup).flatMap { model.clusters[$0].chunks })
                hot = Set(startupPath.prefix(1))
            } else {
                background = configuration.complete ? all : []
            }
        }
        startupPendingBytes = startupSet.reduce(0) { $0 + (local.contains($1) ? 0 : chunks.bytes($1) ?? 0) }
        bufferedBytes = startupSet.reduce(0) { $0 + (local.contains($1) ? chunks.bytes($1) ?? 0 : 0) }
        return fill() + startIfReady()
    }

    /// The guest touched `location` for the first time; `waited` says whether it was a demand miss.
    public mutating func accessed(_ location: ChunkLocation, waited: Bool) -> [Action] {
        markLocal(location)
        var actions: [Action] = []
        if let cluster = clusterOf[location] {
            if entered.insert(cluster).inserted { actions += enter(cluster) }
        } else {
            // Readahead as Linux's on-demand readahead does it: only for a sequential reader (a miss
            // right after the previous first touch), and kept going while the reader consumes the
            // window; random misses read nothing extra.
            let sequential = lastTouch[location.role].map { (1...2).contains(location.index - $0) } ?? false
            if (waited && sequential) || readahead.contains(location) { queueReadahead(after: location) }
        }
        lastTouch[location.role] = location.index
        return actions + fill() + startIfReady()
    }

    /// A prefetch finished and its chunk is local.
    public mutating func fetched(_ location: ChunkLocation) -> [Action] {
        markLocal(location)
        return fill() + startIfReady()
    }

    /// A prefetch failed or was cancelled by someone else; it is retried later a few times.
    public mutating func failed(_ location: ChunkLocation) -> [Action] {
        if let bytes = outstanding.removeValue(forKey: location) { outstandingBytes -= bytes }
        failures[location, default: 0] += 1
        if failures[location]! < Self.maximumFailures { background.append(location) }
        return fill() + startIfReady()
    }

    /// Regular check with the fetcher's latest link measurements (nil fields: not measured yet).
    public mutating func tick(bandwidthBytesPerSecond: Double?, rttSeconds: Double?) -> [Action] {
        if let bandwidthBytesPerSecond, bandwidthBytesPerSecond.isFinite, bandwidthBytesPerSecond > 0 {
            bytesPerSecond = bandwidthBytesPerSecond
        }
        if let rttSeconds, rttSeconds.isFinite, rttSeconds >= 0 { self.rttSeconds = rttSeconds }
        return fill() + startIfReady()
    }

    // MARK: policy

    /// From the most likely first cluster, follow the most likely unvisited successor while it is
    /// likely enough: the path vTube buffers for and streams in order.
    private func predictedPath(_ model: AccessModel) -> [Int] {
        var path: [Int] = []
        var visited = Set<Int>()
        var candidates = model.start
        while let next = candidates.first(where: { !visited.contains($0.to) && $0.probability >= configuration.minimumTransitionProbability }) {
            path.append(next.to)
            visited.insert(next.to)
            candidates = model.clusters[next.to].next
        }
        return path
    }

    /// Whether path cluster `number` counts for the startup buffer (after-ready clusters only with
    /// `StartupBuffer.path`).
    private func countsForStartup(_ number: Int) -> Bool {
        configuration.startupBuffer == .path || !(model?.clusters[number].afterReady ?? false)
    }

    /// Startup buffer (vTube): the guest reaches cluster k of the path `startSeconds` (guest time)
    /// after it starts, by which time the link delivers `rate × startSeconds` more, so the buffer
    /// must cover the largest shortfall `cumulativeBytes(k) − rate × start(k)`, plus one round trip
    /// of data; cumulative bytes are expected bytes (each cluster's bytes × its support). After-ready clusters count with `StartupBuffer.path`: a session with pauses
    /// (think time) lets them stream and adds little; one that reads faster than the link adds the
    /// shortfall it would otherwise spend stalled.
    private func startupTarget() -> Int {
        switch configuration.mode {
        case .none: return 0
        case .full, .workingset: return bufferedBytes + startupPendingBytes
        case .vtube:
            guard let model, !startupPath.isEmpty else { return 0 }
            let rate = startupRate
            var cumulative = 0
            var shortfall = 0.0
            for number in startupPath where countsForStartup(number) {
                let cluster = model.clusters[number]
                // Expected bytes: a cluster only some training runs touched (run-specific pages, such
                // as free memory the guest happened to allocate) is needed with that probability.
                // It is still fetched in path order; the guest just does not wait for all of it.
                cumulative += Int((Double(cluster.bytes) * cluster.support).rounded(.up))
                shortfall = max(shortfall, Double(cumulative) - rate * cluster.startSeconds)
            }
            let withMargin = shortfall + rate * rttSeconds
            return min(Int(withMargin.rounded(.up)), bufferedBytes + startupPendingBytes)
        }
    }

    /// The rate the startup buffer is sized with: the fetcher's estimate (a max filter, which can run
    /// ahead of what a loaded path delivers), capped by the goodput this run's prefetches actually got
    /// once there is enough of it to judge (a quarter second of transfers).
    private var startupRate: Double {
        guard let firstIssue, completedBytes > 0 else { return bytesPerSecond }
        let elapsed = firstIssue.duration(to: clock.now)
        guard elapsed >= Self.goodputWindow else { return bytesPerSecond }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return min(bytesPerSecond, Double(completedBytes) / seconds)
    }

    static var goodputWindow: Duration { .milliseconds(250) }

    private mutating func startIfReady() -> [Action] {
        guard guestStarted == nil, let began = bufferingStarted else { return [] }
        let timedOut = began.duration(to: clock.now) >= configuration.maximumBuffering
        guard timedOut || bufferedBytes >= startupTarget() else { return [] }
        guestStarted = clock.now
        return [.startGuest(bufferedBytes: bufferedBytes)]
    }

    /// The guest entered `cluster`: its remaining chunks, then its likely successors up to the
    /// lookahead, become urgent; outstanding prefetches of other clusters are cancelled.
    private mutating func enter(_ cluster: Int) -> [Action] {
        guard let model, configuration.mode == .vtube else { return [] }
        var newHot: [Int] = [cluster]
        var budget = configuration.lookaheadBytes
        var frontier = [cluster]
        while let current = frontier.first, budget > 0 {
            frontier.removeFirst()
            for transition in model.clusters[current].next where transition.probability >= configuration.minimumTransitionProbability {
                guard !newHot.contains(transition.to), !entered.contains(transition.to) else { continue }
                newHot.append(transition.to)
                frontier.append(transition.to)
                budget -= model.clusters[transition.to].bytes
                if budget <= 0 { break }
            }
        }
        hot = Set(newHot)
        epoch += 1
        urgent = Array(urgent[urgentHead...]).filter { clusterOf[$0].map { hot.contains($0) } ?? true }
        urgentHead = 0
        urgent = newHot.flatMap { model.clusters[$0].chunks } + urgent
        // Outstanding prefetches of clusters off the new path would delay it: cancel them. They come
        // back first among the background work, in the order they were issued: they were planned
        // before everything still queued there (usually the predicted path a little further on), and
        // at the back of the queue the guest would reach them before the stream did.
        var actions: [Action] = []
        var cancelled: [ChunkLocation] = []
        for (location, bytes) in outstanding.sorted(by: { issueOrder[$0.key, default: 0] < issueOrder[$1.key, default: 0] }) {
            guard let owner = clusterOf[location], !hot.contains(owner) else { continue }
            outstanding.removeValue(forKey: location)
            outstandingBytes -= bytes
            actions.append(.cancel(location))
            cancelled.append(location)
        }
        background.insert(contentsOf: cancelled, at: backgroundHead)
        return actions
    }

    /// Keeps `readaheadChunks` fetchable chunks after `location` local or on their way.
    private mutating func queueReadahead(after location: ChunkLocation) {
        guard let list = chunks.stored[location.role] else { return }
        var counted = 0
        var index = location.index + 1
        var ahead: [ChunkLocation] = []
        while counted < configuration.readaheadChunks, index < list.count {
            let next = ChunkLocation(role: location.role, index: index)
            index += 1
            guard list[next.index] != nil else { continue }
            counted += 1
            readahead.insert(next)
            if !local.contains(next), outstanding[next] == nil { ahead.append(next) }
        }
        epoch += 1
        urgent = ahead + Array(urgent[urgentHead...])
        urgentHead = 0
    }

    private var outstandingLimit: Int {
        let bdp = bytesPerSecond * max(rttSeconds, 0.001)
        return max(configuration.minimumOutstandingBytes, Int(configuration.outstandingBDPs * bdp))
    }

    /// Issues fetches in plan order while the outstanding bytes stay under the limit.
    private mutating func fill() -> [Action] {
        var actions: [Action] = []
        while outstandingBytes < outstandingLimit, let location = nextCandidate() {
            let bytes = chunks.bytes(location) ?? 0
            if firstIssue == nil { firstIssue = clock.now }
            outstanding[location] = bytes
            outstandingBytes += bytes
            sequence += 1
            issueOrder[location] = sequence
            // Later epochs (newer predictions) rank before everything issued earlier.
            actions.append(.fetch(location, rank: Double(sequence) - Double(epoch) * 1e9))
        }
        return actions
    }

    /// The next chunk to issue (not local, not outstanding, fetchable), consuming the plan up to it.
    private mutating func nextCandidate() -> ChunkLocation? {
        while urgentHead < urgent.count {
            let location = urgent[urgentHead]
            urgentHead += 1
            if isCandidate(location) { return location }
        }
        while backgroundHead < background.count {
            let location = background[backgroundHead]
            backgroundHead += 1
            if isCandidate(location) { return location }
        }
        return nil
    }

    private func hasCandidate() -> Bool {
        urgent[urgentHead...].contains(where: isCandidate) || background[backgroundHead...].contains(where: isCandidate)
    }

    private func isCandidate(_ location: ChunkLocation) -> Bool {
        !local.contains(location) && outstanding[location] == nil && (chunks.bytes(location) ?? 0) > 0
            && failures[location, default: 0] < Self.maximumFailures
    }

    private mutating func markLocal(_ location: ChunkLocation) {
        if let bytes = outstanding.removeValue(forKey: location) {
            outstandingBytes -= bytes
            completedBytes += bytes
        }
        guard local.insert(location).inserted else { return }
        if startupSet.contains(location), let bytes = chunks.bytes(location) {
            startupPendingBytes -= bytes
            bufferedBytes += bytes
        }
    }
}
