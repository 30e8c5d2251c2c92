import Catalog
import Foundation
import Hypervisor
import Logging
import StreamClient

/// `streamvm boot`: resolves an appliance in a remote catalogue and runs it at once, its disk read
/// through a `LazyImage` on virtio-blk while the prefetch driver streams what the guest will need
/// next. An appliance published with a memory snapshot is resumed (vmstate.json fetched and checked
/// first, RAM paged in from the memory artifact as the guest touches it); otherwise the kernel and
/// initrd are fetched whole (the boot loader needs them complete) and it boots. Every first access,
/// disk chunk or memory page, is traced; the trace goes back to the server when the caller asks.
public final class StreamBootSession: @unchecked Sendable {
    public struct Options: Sendable {
        public var reference: String
        public var prefetch: PrefetchMode = .vtube
        /// Also stream the whole image in the background, not just the working set.
        public var complete = false
        /// Copy-on-write file for guest disk writes; nil uses a temporary file removed after the run.
        public var overlayPath: String?
        public var timeout: Duration?
        /// How long a disk read may keep failing (link down) before the run ends with an error.
        public var readDeadlineSeconds = 120.0
        public var memoryMiB: Int?
        public var vcpus: Int?
        public var consoleOutput: @Sendable (UInt8) -> Void = { _ in }
        /// Boot the kernel even when the appliance has a memory snapshot (as `streamvm run --cold`).
        public var cold = false
        /// Install prefetched memory chunks into guest RAM ahead of the guest (vtube, workingset,
        /// full). It cuts faults (4,206 → 626 per vtube run on the replay guest); off by default until
        /// its gain is measured where faults are dear (the lab), see docs/STREAMBOOT.md.
        public var installAhead = false
        /// A memory fault maps its whole 64 KiB chunk (`StreamedPageSource.faultAround`): experimental,
        /// off by default while the guest triple faults of streamed lab resumes are unexplained.
        public var faultAround = false
        public var scheduler: PrefetchScheduler<ContinuousClock>.Configuration?
        /// Parameters for the appliance, on the command line of a cold boot or the resume line.
        public var applianceArguments = ApplianceArguments.none
        /// Hears how the boot goes: every `progressInterval` while buffering, then once when the
        /// guest starts and once when it prints its ready marker (the CLI's terminal line).
        public var onProgress: @Sendable (Milestone, Live.Counters) -> Void = { _, _ in }
        public var progressInterval: Duration = .milliseconds(200)
        /// Last edits to the machine before it is made (the CLI's time dilation).
        public var machineAdjustment: (@Sendable (inout MachineConfiguration) throws -> Void)?

        public init(reference: String) { self.reference = reference }
    }

    /// How a boot went, for the CLI's JSON report and for tests.
    public struct Report: Sendable, Codable {
        public var appliance: String
        public var version: String
        public var prefetch: PrefetchMode
        /// Resumed from the published memory snapshot (false: booted).
        public var resumed: Bool
        public var model: String?
        public var stopReason: String
        /// Seconds from the start of `boot` to the ready marker.
        public var readySeconds: Double?
        /// Seconds from the start of `boot` to the trace's time zero (after kernel and initrd arrived).
        public var traceStartSeconds: Double
        /// Seconds the guest waited before it was allowed to start (buffering).
        public var bufferingSeconds: Double?
        public var bufferedBytes: Int
        public var stallCount: Int
        public var stallSeconds: Double
        public var stallsAfterReady: Int
        public var stallSecondsAfterReady: Double
        public var bytesReceived: Int
        public var prefetchStatistics: PrefetchDriver.Statistics
        public var traceRecords: Int
        /// Memory pages put into guest RAM ahead of the guest (before the start and while it ran).
        public var memoryPagesInstalled: Int?
        /// userfaultfd faults the guest took on its memory (pages it touched that were not installed).
        public var memoryPageFaults: Int?
        /// Time the page source took per faulted data page, local chunks and fetched ones apart.
        public var memoryPageReads: PageReadTimes.Summary?

    }

    public struct Outcome: Sendable {
        public var reason: StopReason
        public var report: Report
        public var trace: RunTrace
        public var console: String
        /// The live figures as the run ended (the CLI's closing summary).
        public var counters: Live.Counters
    }

    /// Where a boot is, for `Options.onProgress`.
    public enum Milestone: Sendable, Equatable {
        case buffering, guestStarted, ready
    }

    public let loader: ChunkRouter
    public let options: Options
    private let logger: Logger

    public init(loader: ChunkRouter, options: Options, logger: Logger) {
        self.loader = loader
        self.options = options
        self.logger = logger
    }

    /// What a running stream-boot has done so far, for the control API's metrics and the CLI's
    /// progress line.
    public struct Live: Sendable {
        public let appliance: String
        public let version: String
        let recorder: TraceRecorder
        let fetcher: Fetcher
        let driver: PrefetchDriver
        /// Seconds from the start of `boot` to the recorder's time zero.
        let traceStartSeconds: Double
        let bootStarted: ContinuousClock.Instant
        let imageBytes: Int
        let cachedChunks: Int
        let cachedBytes: Int

        public struct Counters: Sendable {
            /// Response bytes received from origins (compressed chunks, manifests, state).
            public var bytesReceived: Int
            /// Stored (compressed) bytes of everything this run reads, each distinct chunk once:
            /// streamed artifacts and the kernel and initrd of a cold boot.
            public var imageBytes: Int
            /// Distinct chunks (and their stored bytes) in the local cache when the run began.
            public var cachedChunks: Int
            public var cachedBytes: Int
            /// Startup bytes local so far, and what the prefetch policy wants before the guest starts.
            public var bufferedBytes: Int
            public var bufferTargetBytes: Int
            /// Chunks the guest touched for the first time, and how many of those it waited for.
            public var firstTouches: Int
            public var stalls: Int
            public var stallSeconds: Double
            /// Seconds since `boot` began, and from then to the guest's start and its ready marker.
            public var elapsedSeconds: Double
            public var startSeconds: Double?
            public var readySeconds: Double?
        }

        public func counters() -> Counters {
            let stalls = recorder.stallSummary()
            let buffer = driver.bufferProgress
            let milestones = recorder.milestones
            return Counters(bytesReceived: fetcher.linkEstimate.bytesReceived, imageBytes: imageBytes,
                            cachedChunks: cachedChunks, cachedBytes: cachedBytes,
                            bufferedBytes: buffer.buffered, bufferTargetBytes: buffer.target,
                            firstTouches: recorder.firstTouchCount, stalls: stalls.count, stallSeconds: stalls.seconds,
                            elapsedSeconds: (ContinuousClock.now - bootStarted).inSeconds,
                            startSeconds: milestones.guestStarted.map { $0 + traceStartSeconds },
                            readySeconds: milestones.ready.map { $0 + traceStartSeconds })
        }
    }

    /// Boots and runs the appliance until it stops. `onMachine` sees the machine before it runs (the
    /// CLI wires signals and terminal input there); `beforeRun` then may do async set-up around it
    /// (the control API server) and, by throwing, keep it from running.
    public func boot(onMachine: @escaping @Sendable (Machine) -> Void = { _ in },
                     beforeRun: @escaping @Sendable (Machine, Live) async throws -> Void = { _, _ in }) async throws -> Outcome {
        let started = ContinuousClock.now
        let client = loader.client
        let (catalog, _) = try await client.loadCatalog()
        let resolved = try catalog.index.resolve(options.reference)
        let (manifest, _) = try await client.loadManifest(resolved.entry.manifest)
        let config = manifest.config
        let recorder = TraceRecorder()
        let traceStartSeconds = (ContinuousClock.now - started).inSeconds
        // The model comes while the snapshot state (or kernel and initrd) does: on a WAN each
        // dependent fetch costs a round trip before the guest can start.
        let wantsModel = options.prefetch != .none && options.prefetch != .full
        async let loadedModel = wantsModel
            ? ModelSource.load(client: client, index: catalog.index, appliance: resolved.name, manifest: manifest,
                               manifestDigest: resolved.entry.manifest, logger: logger)
            : nil
        // A memory snapshot: its state comes first (small, and it decides RAM size and vCPUs).
        let snapshot = manifest.artifact(.memory) == nil || options.cold ? nil
            : try await MemorySnapshotAttachment.open(manifest: manifest, loader: loader, traceSink: recorder,
                                                      readDeadlineSeconds: options.readDeadlineSeconds, faultAround: options.faultAround)
        let memoryMiB = options.memoryMiB ?? snapshot.map { $0.state.memorySize >> 20 } ?? config.memoryMiB
        let vcpuCount = options.vcpus ?? snapshot?.state.vcpuCount ?? config.vcpus
        guard (2...ApplianceConfig.maximumMemoryMiB).contains(memoryMiB), (1...ApplianceConfig.maximumVCPUs).contains(vcpuCount) else {
            throw StreamBootError.invalidResources("memory \(memoryMiB) MiB / \(vcpuCount) vCPUs is outside what a VM can have")
        }

        // The boot loader needs kernel and initrd whole: fetch them first, at demand priority. A
        // resume needs neither.
        let image: BootImage
        if snapshot != nil {
            image = .flat([])
        } else {
            guard manifest.artifact(.kernel) != nil else { throw StreamBootError.missingKernel(appliance: resolved.name) }
            let kernel = try await readWhole(.kernel, manifest: manifest)
            switch config.kernelFormat ?? .linux {
            case .flat: image = .flat(kernel)
            case .linux: image = .linux(kernel: kernel, initrd: manifest.artifact(.initrd) == nil ? nil : try await readWhole(.initrd, manifest: manifest))
            }
        }

        // The disk (and memory snapshot), traced and prefetched.
        var targets: [ArtifactRole: any PrefetchTarget] = [:]
        var disks: [any BlockBackend] = []
        var temporaryOverlay: String?
        let failure = FailureBox()
        // Registered before the overlay exists: opening the image creates its files and may then fail.
        defer { if let temporaryOverlay { CopyOnWriteOverlay.remove(at: temporaryOverlay) } }
        if manifest.artifact(.disk) != nil {
            var overlay = options.overlayPath ?? ""
            if options.overlayPath == nil {
                overlay = NSTemporaryDirectory() + "streamvm-overlay-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
                temporaryOverlay = overlay
            }
            let disk = try await LazyImage.open(manifest: manifest, role: .disk, loader: loader, traceSink: recorder)
            targets[.disk] = disk
            let published = LazyBlockBackend(image: disk, readDeadlineSeconds: options.readDeadlineSeconds) { error in failure.set(error) }
            disks.append(try CopyOnWriteOverlay(base: published, overlayPath: overlay, baseIdentity: "sha256:\(disk.artifact.digest)",
                                             removeOnClose: temporaryOverlay != nil))
        }
        // Memory pages stream and prefetch like disk chunks.
        if let snapshot { targets[.memory] = snapshot.memory }
        // Prefetched memory goes into guest RAM ahead of the guest; never in `none` runs (their
        // traces train the model and must see every first touch as a fault).
        let installer = snapshot == nil || options.prefetch == .none || !options.installAhead ? nil
            : MemoryPageInstaller(pages: snapshot!.pages, traceInstalls: options.prefetch != .full)
        defer { installer?.stop() }
        let model = await loadedModel
        let streamed = StreamedChunks(manifest: manifest, roles: Array(targets.keys).sorted { $0.rawValue < $1.rawValue })
        let local = Set(streamed.allFetchable.filter { targets[$0.role]?.isLocal(chunk: $0.index) == true })
        // What this run reads, counted once per distinct chunk as the loader fetches it.
        let readRoles = Array(targets.keys) + (snapshot == nil ? [.kernel, .initrd] : [])
        let imageChunks = Set(readRoles.compactMap { manifest.artifact($0) }.flatMap { $0.chunks.compactMap { $0 } })
        let cachedChunks = Set(local.compactMap { location in manifest.artifact(location.role)?.chunks[location.index] })
        var schedulerConfiguration = options.scheduler ?? PrefetchScheduler<ContinuousClock>.Configuration(mode: options.prefetch)
        schedulerConfiguration.mode = options.prefetch
        schedulerConfiguration.complete = options.complete
        let scheduler = PrefetchScheduler(configuration: schedulerConfiguration, chunks: streamed, model: model, local: local,
                                          clock: ContinuousClock())
        let fetcher = client.fetcher
        let driver = PrefetchDriver(scheduler: scheduler, targets: targets,
                                    link: { let estimate = fetcher.linkEstimate; return (estimate.bandwidthBytesPerSecond, estimate.rttSeconds) },
                                    onPrefetched: { location in
                                        recorder.notePrefetched(location)
                                        if location.role == .memory { installer?.notePrefetched(chunk: location.index) }
                                    }, logger: logger)
        recorder.addListener { [weak driver] location, waited in driver?.accessed(location, waited: waited) }
        let live = Live(appliance: resolved.name, version: resolved.version, recorder: recorder, fetcher: client.fetcher, driver: driver,
                        traceStartSeconds: traceStartSeconds, bootStarted: started,
                        imageBytes: imageChunks.reduce(0) { $0 + $1.stored },
                        cachedChunks: cachedChunks.count, cachedBytes: cachedChunks.reduce(0) { $0 + $1.stored })
        let progress = options.onProgress
        driver.start()
        defer { driver.stop() }
        let interval = options.progressInterval
        let bufferingReports = Task.detached {
            while !Task.isCancelled {
                progress(.buffering, live.counters())
                try? await Task.sleep(for: interval)
            }
        }
        await driver.waitUntilGuestMayStart()
        bufferingReports.cancel()
        _ = await bufferingReports.value

        let marker = ReadyMatcher(marker: Array(config.readyMarker.utf8))
        let forward = options.consoleOutput
        var machineConfiguration = MachineConfiguration(
            memorySize: memoryMiB << 20, vcpuCount: vcpuCount, image: image,
            commandLine: options.applianceArguments.commandLine(config.kernelCommandLine ?? ""),
            disks: disks, readyMarker: config.readyMarker,
            consoleOutput: { byte in
                forward(byte)
                if marker.feed(byte) {
                    recorder.ready()
                    progress(.ready, live.counters())
                }
            })
        try snapshot?.attach(to: &machineConfiguration)
        machineConfiguration.restore?.consoleInputOnResume = options.applianceArguments.resumeLine(marker: RestorePlan.resumedMarker)
        if let installer { machineConfiguration.restore?.prefetchPages = installer.startupPages(everyLocalChunk: options.prefetch == .full) }
        try options.machineAdjustment?(&machineConfiguration)
        let machine = try Machine(configuration: machineConfiguration, logger: logger)
        failure.onSet = { error in machine.stop(.failure(StreamBootError.diskUnavailable("\(error)").description)) }
        onMachine(machine)
        try await beforeRun(machine, live)
        recorder.guestStarted()
        progress(.guestStarted, live.counters())
        if let installer, let handler = machine.pageFaultHandler { installer.start(handler: handler) }
        let timeout = options.timeout
        let reason = await withCheckedContinuation { (continuation: CheckedContinuation<StopReason, Never>) in
            // The VMM blocks in KVM_RUN: keep it off the Swift concurrency pool.
            Thread.detachNewThread {
                let reason = machine.run(timeout: timeout)
                installer?.stop()
                continuation.resume(returning: reason)
            }
        }
        driver.stop()

        let trace = recorder.trace(appliance: resolved.name, version: resolved.version, manifest: resolved.entry.manifest,
                                   prefetch: options.prefetch, model: try model.map { try $0.digest })
        let stalls = recorder.stallSummary()
        let stats = driver.stats
        let readySeconds = machine.timing.ready.map { ($0 - started).inSeconds }
        let report = Report(
            appliance: resolved.name, version: resolved.version, prefetch: options.prefetch, resumed: snapshot != nil, model: trace.model?.hex,
            stopReason: "\(reason)", readySeconds: readySeconds, traceStartSeconds: traceStartSeconds, bufferingSeconds: stats.bufferingSeconds,
            bufferedBytes: stats.bufferedBytesAtStart, stallCount: stalls.count, stallSeconds: stalls.seconds,
            stallsAfterReady: stalls.afterReadyCount, stallSecondsAfterReady: stalls.afterReadySeconds,
            bytesReceived: fetcher.linkEstimate.bytesReceived, prefetchStatistics: stats, traceRecords: trace.records.count,
            memoryPagesInstalled: installer?.pagesInstalled, memoryPageFaults: machine.pageFaultHandler?.faultLog.count,
            memoryPageReads: snapshot?.pages.readTimes.summary)
        return Outcome(reason: reason, report: report, trace: trace, console: machine.console.output, counters: live.counters())
    }

    private func readWhole(_ role: ArtifactRole, manifest: Manifest) async throws -> [UInt8] {
        let image = try await LazyImage.open(manifest: manifest, role: role, loader: loader)
        return try await image.read(offset: 0, length: image.size)
    }
}

extension Duration {
    public var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Spots the ready marker in the console byte stream (the trace records when it appeared).
private final class ReadyMatcher: @unchecked Sendable {
    private let marker: [UInt8]
    private var window: [UInt8] = []
    private var seen = false
    private let lock = NSLock()

    init(marker: [UInt8]) { self.marker = marker }

    /// True exactly once, for the byte that completes the marker.
    func feed(_ byte: UInt8) -> Bool {
        lock.withLock {
            guard !seen, !marker.isEmpty else { return false }
            window.append(byte)
            if window.count > marker.count { window.removeFirst(window.count - marker.count) }
            seen = window == marker
            return seen
        }
    }
}

/// The first disk failure past the deadline, and what to do about it once the machine exists.
private final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var error: (any Error)?
    private var handler: (@Sendable (any Error) -> Void)?

    var onSet: (@Sendable (any Error) -> Void)? {
        get { lock.withLock { handler } }
        set {
            let pending = lock.withLock { () -> (any Error)? in
                handler = newValue
                return error
            }
            if let pending { newValue?(pending) }
        }
    }

    func set(_ value: any Error) {
        let handler = lock.withLock { () -> (@Sendable (any Error) -> Void)? in
            if error == nil { error = value }
            return self.handler
        }
        handler?(value)
    }
}
