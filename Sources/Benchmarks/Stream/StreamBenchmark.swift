import Catalog
import Foundation
import Hypervisor
import StreamBoot
import Logging
import StreamClient
import StreamServer

/// `streamvm bench stream`: for one appliance and one WAN profile, stream-boots the appliance with
/// each prefetch mode through the shaping proxy and measures time to ready, stalls after ready and
/// bytes, each next to its own oracle bound: RTT + compressed bytes of the chunks *that run's guest*
/// touched before ready ÷ rate (a guest that waits longer touches more, so one oracle for all modes
/// would flatter the fast ones; issue #15). The model is
/// trained on separate runs (unshaped, on loopback) before any evaluated run. An appliance directory
/// with a memory snapshot (memory.img + vmstate.json) is published with it and every run resumes it
/// (ready = the marker printed after the first post-resume response).
public struct StreamBenchmark: Sendable {
    public struct Profile: Sendable, Codable {
        public var name: String
        public var rateMbit: Double
        public var rttMs: Double
        public var rateBytesPerSecond: Double { rateMbit * 1e6 / 8 }

        public init(name: String, rateMbit: Double, rttMs: Double) {
            self.name = name
            self.rateMbit = rateMbit
            self.rttMs = rttMs
        }

        /// The issue's profiles.
        public static let all = [Profile(name: "dsl", rateMbit: 7.2, rttMs: 30), Profile(name: "lte", rateMbit: 20, rttMs: 60),
                                 Profile(name: "fast", rateMbit: 100, rttMs: 20)]
    }

    public struct ModeResult: Sendable, Codable {
        public var ttr_s: Double?
        public var stall_count: Int
        public var stall_s: Double
        public var bytes: Int
        public var stop: String
        /// Diagnostics beyond the issue's shape: bytes local when the guest started, all demand misses.
        public var buffered_bytes: Int
        public var demand_misses: Int
        /// Seconds from the start of the boot until the vCPUs started (kernel, initrd, buffering): for
        /// `full`, ttr_s minus this is the guest's own time to ready with everything local (compute floor).
        public var guest_start_s: Double? = nil
        /// Resumes: userfaultfd faults on guest memory, and pages installed ahead of the guest.
        public var page_faults: Int? = nil
        public var pages_installed: Int? = nil
        /// Resumes: page source time per faulted data page (fault-to-page before the UFFDIO_COPY),
        /// for pages whose chunk was local and for pages that waited for a fetch.
        public var fault_local_p50_ms: Double? = nil
        public var fault_local_count: Int? = nil
        public var fault_fetched_p50_ms: Double? = nil
        public var fault_fetched_count: Int? = nil
        /// This run's oracle: RTT + `oracle_bytes` ÷ rate (nil when the run never reached READY).
        public var oracle_ttr_s: Double? = nil
        /// Compressed bytes this run's guest needed before READY: what must be whole before the start
        /// plus each distinct non-zero chunk it touched first before READY.
        public var oracle_bytes: Int? = nil
        /// ttr_s ÷ oracle_ttr_s: how far this mode is from the best any prefetcher could do for the
        /// bytes this very run needed (1.0 is the bound).
        public var oracle_ratio: Double? = nil
    }

    /// The oracle of one run: the RTT plus what its guest needed before READY at the link's rate.
    public struct Oracle: Sendable, Equatable {
        public var bytes: Int
        public var seconds: Double

        /// `manifest` is the version that ran; `ready` the trace's ready time (wall seconds).
        public static func of(trace: RunTrace, ready: Double, manifest: Manifest, profile: Profile) throws -> Oracle {
            let bytes = try StreamBenchmark.bytesNeeded(before: ready, trace: trace, manifest: manifest)
            return Oracle(bytes: bytes, seconds: profile.rttMs / 1000 + Double(bytes) / profile.rateBytesPerSecond)
        }
    }

    /// What `none_run_oracle_ttr_s` counts.
    public enum OracleBasis: String, Sendable, Codable {
        /// The chunks the `none` run needed before READY: the issue's bound.
        case noneRun = "none-run"
        /// No `none` run reached READY (not evaluated, or it crashed): only what must be whole before
        /// the start, a lower bound that is not comparable with the issue's oracle.
        case startOnly = "start-only"
    }

    /// The JSON shape the issue names, plus where the figures come from.
    public struct Report: Sendable, Codable {
        public var appliance: String
        /// Runs resumed the appliance's memory snapshot instead of booting it.
        public var resumed: Bool
        public var profile: String
        /// The former single oracle (before issue #15), kept for comparison with older reports: the
        /// chunks the `none` run needed before READY, charged to every mode. It over-counts for fast
        /// modes (a `none` guest waits longer and touches more); each mode's own oracle is
        /// `modes.<mode>.oracle_ttr_s`. Older reports call this field `oracle_ttr_s`.
        public var none_run_oracle_ttr_s: Double
        /// What `none_run_oracle_ttr_s` counts (older reports: `oracle_basis`).
        public var none_run_oracle_basis: OracleBasis
        public var modes: [String: ModeResult]
        public var training_runs: Int
        public var source: String
        /// Time to ready of each (unshaped, loopback) training run.
        public var training_ttr_s: [Double]? = nil
        /// The emulated link as measured through a ShapingProxy just before the runs (set by the CLI).
        public var link: LinkAccuracyProbe.Result? = nil
        /// Time dilation factor N the profile was scaled by (rate ÷ N, RTT × N; set by the CLI).
        public var dilation: Double? = nil
        /// What every run passed to the appliance (e.g. its think time and the dilation factor).
        public var appliance_arguments: [String]? = nil
    }

    /// Bytes received over time and stalls of one mode's run, for the timeline.
    public struct Timeline: Sendable {
        public var mode: PrefetchMode
        public var samples: [(seconds: Double, bytes: Int)]
        public var stalls: [(seconds: Double, duration: Double)]
        public var readySeconds: Double?

        public init(mode: PrefetchMode, samples: [(seconds: Double, bytes: Int)], stalls: [(seconds: Double, duration: Double)], readySeconds: Double?) {
            self.mode = mode
            self.samples = samples
            self.stalls = stalls
            self.readySeconds = readySeconds
        }
    }

    public var applianceDirectory: String
    public var profile: Profile
    public var trainingRuns = 3
    public var modes: [PrefetchMode] = [.full, .none, .workingset, .vtube]
    public var timeoutSeconds = 600.0
    public var source = "unspecified"
    /// Time dilation (DieCast) for a dilated link: every timeout of the client (fetch stall and
    /// connect, read deadline, buffering cap) and of the server (stall guard) is multiplied by this,
    /// so a link N times slower does not trip timers tuned for the undilated one.
    public var timerScale = 1.0
    /// Resumed runs install prefetched memory ahead of the guest (`StreamBootSession.Options.installAhead`).
    public var installAhead = false
    /// Resumes map a faulting page's whole chunk (`StreamBootSession.Options.faultAround`, experimental).
    public var faultAround = false
    /// What vtube's startup buffer covers in the evaluated runs.
    public var startupBuffer = StartupBuffer.ready
    /// Passed to the appliance in every run, training and evaluated (e.g. its think time).
    public var applianceArguments = ApplianceArguments.none
    /// Told a line as each run starts and ends (the CLI prints them to stderr): a lab run takes many
    /// minutes, and whoever watches it should see which run it is in.
    public var progress: (@Sendable (String) -> Void)?
    let logger: Logger

    public init(applianceDirectory: String, profile: Profile, logger: Logger) {
        self.applianceDirectory = applianceDirectory
        self.profile = profile
        self.logger = logger
    }

    /// The modes named in `list` ("none,vtube"), in that order: each known, each once, at least one.
    /// A subset is for looking at one mode (a lab crash, say) without the hour a full run takes.
    public static func modes(from list: String) throws -> [PrefetchMode] {
        let names = list.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let modes = try names.map { name in
            guard let mode = PrefetchMode(rawValue: name) else {
                throw ClientError.benchmark("unknown mode '\(name)' (modes: \(PrefetchMode.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return mode
        }
        guard Set(modes).count == modes.count else { throw ClientError.benchmark("each mode may be named once: \(list)") }
        return modes
    }

    public func run() async throws -> (Report, [Timeline]) {
        var template = Array("/tmp/streamvm-benchstream-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ClientError.io(path: "/tmp", errno: errno) }
        let work = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let key = SigningKey()
        let catalog = try CatalogDirectory(root: work + "/catalog", create: true)
        let appliance = try ApplianceDirectory(path: applianceDirectory)
        _ = try Publisher(catalog: catalog, key: key, logger: logger).publish(appliance)
        let name = appliance.config.name
        let tokenFile = work + "/token"
        try "bench-stream-token-\(UInt64.random(in: 0...UInt64.max))".write(toFile: tokenFile, atomically: true, encoding: .utf8)

        var options = CatalogServer.Options(catalog: catalog.root)
        options.port = 0
        options.scrubEnabled = false
        options.traceTokenFile = tokenFile
        options.traceDirectory = work + "/traces"
        options.stallTimeout = options.stallTimeout * timerScale
        let server = try CatalogServer(options: options, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        // Its own threads: the VM runs of this benchmark must not starve the server (DedicatedThreadsExecutor).
        let serving = Task(executorPreference: DedicatedThreadsExecutor.shared) {
            defer { continuation.finish() } // a server that fails to start ends the wait for its port
            try await server.run { continuation.yield($0) }
        }
        // However the runs end, the server stops gracefully and is gone before `work` is deleted.
        func stopServer() async {
            await server.shutdown()
            _ = try? await serving.value
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else {
            await stopServer()
            throw ClientError.benchmark("the catalogue server did not start")
        }
        do {
            let result = try await measure(name, catalog: catalog, key: key, tokenFile: tokenFile, work: work, port: port)
            await stopServer()
            return result
        } catch {
            await stopServer()
            throw error
        }
    }

    /// Training runs against the server on `port`, the model, then every mode through the shaping proxy.
    private func measure(_ name: String, catalog: CatalogDirectory, key: SigningKey, tokenFile: String, work: String,
                         port: Int) async throws -> (Report, [Timeline]) {
        let direct = try Origin("http://127.0.0.1:\(port)")

        // Training runs, unshaped, each uploading its trace; then learn.
        let uploader = try TraceUploader(origin: direct, tokenFile: tokenFile)
        var trainingReady: [Double] = []
        for run in 0..<trainingRuns {
            progress?("training run \(run + 1)/\(trainingRuns) (unshaped, mode none)")
            let outcome = try await boot(name, mode: .none, origin: direct, cache: "\(work)/train-cache-\(run)").outcome
            guard let ready = outcome.report.readySeconds else { throw ClientError.benchmark("training run \(run) never became ready: \(outcome.reason)") }
            progress?(String(format: "training run %d/%d: ready at %.2f s", run + 1, trainingRuns, ready))
            trainingReady.append(ready)
            let trace = outcome.trace
            _ = try await Task.detached { try uploader.upload(trace) }.value
        }
        if trainingRuns > 0 {
            _ = try ModelPublisher(catalog: catalog, key: key, traceRoot: work + "/traces", logger: logger).learn(appliance: name)
        }

        let proxy = try ShapingProxy(upstreamPort: UInt16(port), rateBitsPerSecond: profile.rateMbit * 1e6, rttSeconds: profile.rttMs / 1000)
        defer { proxy.stop() }
        let shaped = try Origin(proxy.url)
        var results: [String: ModeResult] = [:]
        var timelines: [Timeline] = []
        var neededBeforeReady: Int?
        var resumed = false
        guard let published = try catalog.loadCatalog(trust: .insecure) else { throw ClientError.benchmark("\(catalog.root) lost its catalog.json") }
        let manifest = try catalog.loadManifest(try published.index.resolve(name).entry.manifest)
        for mode in modes {
            progress?("mode \(mode.rawValue) over \(profile.name) (\(profile.rateMbit) Mbit/s, \(profile.rttMs) ms)")
            let (outcome, samples) = try await boot(name, mode: mode, origin: shaped, cache: "\(work)/cache-\(mode.rawValue)")
            let report = outcome.report
            resumed = report.resumed
            let oracle = try outcome.trace.readySeconds.map { try Oracle.of(trace: outcome.trace, ready: $0, manifest: manifest, profile: profile) }
            results[mode.rawValue] = ModeResult(ttr_s: report.readySeconds, stall_count: report.stallsAfterReady,
                                                stall_s: report.stallSecondsAfterReady, bytes: report.bytesReceived, stop: report.stopReason,
                                                buffered_bytes: report.bufferedBytes,
                                                demand_misses: outcome.trace.records.filter { $0.outcome == .demandMiss }.count,
                                                guest_start_s: report.traceStartSeconds + (report.bufferingSeconds ?? 0),
                                                page_faults: report.memoryPageFaults, pages_installed: report.memoryPagesInstalled,
                                                fault_local_p50_ms: report.memoryPageReads?.localP50Milliseconds,
                                                fault_local_count: report.memoryPageReads?.localCount,
                                                fault_fetched_p50_ms: report.memoryPageReads?.fetchedP50Milliseconds,
                                                fault_fetched_count: report.memoryPageReads?.fetchedCount,
                                                oracle_ttr_s: oracle?.seconds, oracle_bytes: oracle?.bytes,
                                                oracle_ratio: Self.ratio(report.readySeconds, to: oracle?.seconds))
            progress?("mode \(mode.rawValue): ready at \(report.readySeconds.map { String(format: "%.2f s", $0) } ?? "never"), "
                      + "\(report.stallsAfterReady) stalls after ready, \(report.bytesReceived) bytes, \(report.stopReason)"
                      + (report.memoryPageReads.map { reads in
                          let ms = { (value: Double?) in value.map { String(format: "%.3f ms", $0) } ?? "-" }
                          return "; fault-to-page p50 local \(ms(reads.localP50Milliseconds)) (\(reads.localCount)), fetched \(ms(reads.fetchedP50Milliseconds)) (\(reads.fetchedCount))"
                      } ?? ""))
            if report.readySeconds == nil || outcome.reason != .powerOff(code: 0) {
                // The console is the only record of why a guest died (a panic, a failed check).
                let tail = outcome.console.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).suffix(60).joined(separator: "\n")
                progress?("mode \(mode.rawValue) did not end cleanly; the last console lines:\n\(tail)")
            }
            let offset = report.traceStartSeconds
            timelines.append(Timeline(mode: mode, samples: samples,
                                      stalls: outcome.trace.records.filter { $0.stallSeconds > 0 }.map { (offset + $0.wallSeconds - $0.stallSeconds, $0.stallSeconds) },
                                      readySeconds: report.readySeconds))
            if mode == .none { neededBeforeReady = oracle?.bytes }
        }
        let needed = neededBeforeReady ?? Self.bootArtifactBytes(manifest)
        let basis: OracleBasis = neededBeforeReady == nil ? .startOnly : .noneRun
        let noneRunOracle = profile.rttMs / 1000 + Double(needed) / profile.rateBytesPerSecond
        return (Report(appliance: name, resumed: resumed, profile: profile.name, none_run_oracle_ttr_s: noneRunOracle,
                       none_run_oracle_basis: basis, modes: results, training_runs: trainingRuns,
                       source: source, training_ttr_s: trainingReady, appliance_arguments: applianceArguments.arguments),
                timelines)
    }

    /// `value ÷ bound`, when both exist and the bound is positive.
    static func ratio(_ value: Double?, to bound: Double?) -> Double? {
        guard let value, let bound, bound > 0 else { return nil }
        return value / bound
    }

    /// One boot with a fresh cache, sampling the bytes received every 50 ms.
    private func boot(_ name: String, mode: PrefetchMode, origin: Origin, cache: String) async throws
        -> (outcome: StreamBootSession.Outcome, samples: [(seconds: Double, bytes: Int)]) {
        var fetcherConfiguration = Fetcher.Configuration()
        fetcherConfiguration.stallTimeoutSeconds *= timerScale
        fetcherConfiguration.connectTimeoutSeconds *= timerScale
        let fetcher = try Fetcher(configuration: fetcherConfiguration, logger: logger)
        defer { fetcher.shutdown() }
        let client = try CatalogClient(origins: [origin], trust: .insecure, fetcher: fetcher, logger: logger)
        let loader = ChunkRouter(client: client, cache: try ChunkCache(root: cache, capacityBytes: 8 << 30, logger: logger))
        var options = StreamBootSession.Options(reference: name)
        options.prefetch = mode
        options.timeout = .seconds(Int64(timeoutSeconds))
        options.readDeadlineSeconds *= timerScale
        var scheduler = PrefetchScheduler<ContinuousClock>.Configuration(mode: mode)
        scheduler.maximumBuffering = scheduler.maximumBuffering * timerScale
        scheduler.startupBuffer = startupBuffer
        options.scheduler = scheduler
        options.installAhead = installAhead
        options.faultAround = faultAround
        options.applianceArguments = applianceArguments
        let started = ContinuousClock.now
        let sampler = Task { () -> [(seconds: Double, bytes: Int)] in
            var samples: [(seconds: Double, bytes: Int)] = []
            while !Task.isCancelled {
                samples.append(((ContinuousClock.now - started).inSeconds, fetcher.linkEstimate.bytesReceived))
                try? await Task.sleep(for: .milliseconds(50))
            }
            return samples
        }
        let outcome = try await StreamBootSession(loader: loader, options: options, logger: logger).boot()
        sampler.cancel()
        var samples = await sampler.value
        samples.append(((ContinuousClock.now - started).inSeconds, fetcher.linkEstimate.bytesReceived))
        return (outcome, samples)
    }

    /// Compressed bytes the guest needed before it printed the ready marker: what must be whole before
    /// it starts (kernel and initrd, or for a resume the device state) plus every non-zero chunk, disk
    /// or memory, it touched first before ready, each distinct chunk once (a chunk that appears at two
    /// places is fetched once: the loader keys chunks by content).
    public static func bytesNeeded(before ready: Double, trace: RunTrace, manifest: Manifest) throws -> Int {
        var bytes = bootArtifactBytes(manifest)
        var counted = Set<ChunkID>()
        for record in trace.records where record.wallSeconds <= ready && record.outcome != .zero && record.outcome != .overlay {
            guard let ref = try record.location.ref(in: manifest), counted.insert(ref.id).inserted else { continue }
            bytes += ref.stored
        }
        return bytes
    }

    /// What must be whole before the guest starts; without a trace, the oracle's lower bound.
    public static func bootArtifactBytes(_ manifest: Manifest) -> Int {
        let resumes = manifest.artifact(.memory) != nil && manifest.artifact(.state) != nil
        return (resumes ? [ArtifactRole.state] : [.kernel, .initrd]).compactMap { manifest.artifact($0) }
            .reduce(0) { $0 + $1.storedBytes }
    }
}
