import ArgumentParser
import Catalog
import ControlAPI
import Dispatch
import Foundation
import Glibc
import Hypervisor
import StreamBoot
import StreamClient

/// `streamvm boot <url>/<appliance>[@version]`: stream-boots an appliance from a remote catalogue.
/// Only wiring: the work is in `StreamBootSession`.
struct BootCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot",
        abstract: "Boot an appliance straight from a catalogue, streaming its disk while it runs.",
        discussion: "Exit statuses as for `streamvm run`. On a terminal, stderr shows buffering progress, the start, ready and a closing summary; the JSON report goes to --report.")

    @Argument(help: "<catalogue-url>/<appliance>[@version]")
    var url: String

    @Option(help: "none, workingset (REAP-like), vtube (learned clusters) or full.")
    var prefetch: PrefetchMode = .vtube

    @Flag(help: "Stream the whole image in the background, not just the working set.")
    var complete = false

    @Option(help: "Copy-on-write file for guest disk writes, block map in <file>.map (default: a temporary file removed afterwards).")
    var diskOverlay: String?

    @Option(help: "Stop the guest after this many seconds.")
    var timeout: Double?

    @Option(help: "Seconds a disk read may keep failing (link down) before the run ends with an error.")
    var readDeadline: Double = 120

    @Option(help: "Guest RAM in MiB (default: the appliance's memoryMiB).")
    var memory: Int?

    @Option(help: "Write this run's access trace (JSON) to this file.")
    var traceOut: String?

    @Flag(help: "Upload this run's access trace to the first origin (needs --token-file).")
    var uploadTrace = false

    @Option(name: .customLong("token-file"), help: "File holding the origin's trace upload token (its serve --trace-token-file).")
    var tokenFile: String?

    @Option(help: "Write the boot report (JSON) to this file.")
    var report: String?

    @Option(help: "Write an SVG timeline of this boot to this file: bytes received over time, the guest's stalls, the ready moment.")
    var timeline: String?

    @Flag(help: "Do not use the terminal as the guest's console input.")
    var noInput = false

    @Option(help: "Serve the control API (pause, resume, snapshot, metrics with stream bytes and stalls) on this Unix socket, mode 0600 (docs/CONTROL-API.md).")
    var apiSocket: String?

    @Flag(help: "Boot the kernel even when the appliance is published with a memory snapshot (default: resume it).")
    var cold = false

    @Flag(help: "When resuming, install prefetched memory pages into guest RAM before the guest touches them (fewer userfaultfd faults; off by default, see docs/STREAMBOOT.md).")
    var installAhead = false

    @Flag(help: "When resuming, a memory fault maps its whole 64 KiB chunk (ten times fewer faults; experimental, see docs/STREAMBOOT.md).")
    var faultAround = false

    @Option(help: "What vtube buffers before the guest starts: ready (what comes before ready, the default: the soonest ready, the rest streams while the guest runs) or path (the whole predicted path: fewer stalls later when the session reads faster than the link, a later start).")
    var startupBuffer = StartupBuffer.ready

    @Option(name: .customLong("appliance-arg"),
            help: "key=value for the appliance (repeatable): appended to a cold boot's kernel command line or to a resumed guest's STREAMVM-RESUMED line, e.g. streamvm.think=3 for the Linux appliance's think time.")
    var applianceArguments: [String] = []

    @OptionGroup var client: ClientOptions

    @OptionGroup var registration: RegistrationOptions

    @OptionGroup var rollback: RollbackOptions

    @OptionGroup var dilation: DilationOption

    func validate() throws {
        if uploadTrace, tokenFile == nil, try client.resolved().config.traceTokenFile == nil {
            throw ValidationError("--upload-trace needs --token-file (or traceTokenFile in the config file)")
        }
        guard readDeadline > 0 else { throw ValidationError("--read-deadline must be positive") }
    }

    func run() async throws {
        let logger = commandLogger("streamvm.boot")
        let (origin, appliance) = try Origin.splitApplianceURL(url)
        let traceToken = try tokenFile ?? client.resolved().config.traceTokenFile
        let uploader = try uploadTrace ? traceToken.map { try TraceUploader(origin: origin, tokenFile: $0) } : nil
        let catalogClient = try client.makeClient(primary: [origin], rollback: rollback.protection, logger: logger)
        defer { catalogClient.fetcher.shutdown() }
        let loader = ChunkRouter(client: catalogClient, cache: try client.makeCache(logger: logger))

        var options = StreamBootSession.Options(reference: appliance)
        options.prefetch = prefetch
        options.complete = complete
        options.overlayPath = diskOverlay
        options.timeout = timeout.map { .milliseconds(Int($0 * 1000)) }
        options.readDeadlineSeconds = readDeadline
        options.memoryMiB = memory
        options.cold = cold
        options.installAhead = installAhead
        options.faultAround = faultAround
        var scheduler = PrefetchScheduler<ContinuousClock>.Configuration(mode: options.prefetch)
        scheduler.startupBuffer = startupBuffer
        options.scheduler = scheduler
        options.applianceArguments = try ApplianceArguments(applianceArguments)
        options.consoleOutput = { ConsoleOutput.write($0) }
        let progressView = BootProgressView()
        let timelineRecorder = timeline.map { _ in BootTimelineRecorder() }
        options.onProgress = { milestone, counters in
            progressView.handler(milestone, counters)
            timelineRecorder?.record(counters)
        }
        let dilationSetup = try dilation.prepare()
        defer { dilationSetup?.finish() }
        options.machineAdjustment = { try DilationSetup.apply(dilationSetup, to: &$0) }
        let session = StreamBootSession(loader: loader, options: options, logger: logger)

        let terminal = noInput ? nil : TerminalMode.enterCharacterMode()
        defer { terminal?.restore() }
        let signals = SignalStopper()
        let interactive = terminal != nil
        let api = ControlServerHolder()
        let host = try registration.plan(apiSocket: apiSocket, appliance: appliance, config: try client.resolved().config)
        let outcome: StreamBootSession.Outcome
        do {
            outcome = try await session.boot(onMachine: { machine in
                signals.install(machine)
                if interactive { ConsoleInput.start(feeding: machine.serial) }
            }, beforeRun: { machine, live in
                timelineRecorder?.startSampling(live)
                guard let host else { return }
                let memoryMiB = machine.configuration.memorySize >> 20
                let server = ControlAPIServer(socketPath: host.socket, machine: machine,
                                              info: InstanceInfo(id: host.name, appliance: live.appliance, applianceVersion: live.version, memoryMiB: memoryMiB),
                                              extraMetrics: { StreamMetrics.samples(live.counters()) }, logger: logger)
                try await server.start()
                api.server = server
                try host.register(appliance: live.appliance, version: live.version, command: "boot")
            })
        } catch {
            host?.unregister()
            await api.server?.shutdown()
            await timelineRecorder?.stopSampling()
            throw error
        }
        host?.unregister()
        await api.server?.shutdown()
        await timelineRecorder?.stopSampling()
        signals.cancel()
        terminal?.restore()

        if let traceOut { try AtomicFile.write(try outcome.trace.encoded(), to: traceOut) }
        if let uploader {
            let trace = outcome.trace
            do {
                let answer = try await Task.detached { try uploader.upload(trace) }.value
                logger.info("trace uploaded", metadata: ["answer": "\(answer)"])
            } catch {
                FileHandle.standardError.write(Data("streamvm: trace not uploaded: \(error)\n".utf8))
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let reportBytes = try encoder.encode(outcome.report)
        if let report { try AtomicFile.write(reportBytes, to: report) }
        if let timeline, let timelineRecorder {
            try AtomicFile.write(Data(timelineRecorder.svg(outcome, mode: prefetch, title: "streamvm boot \(url)").utf8), to: timeline)
        }
        if progressView.isEnabled {
            progressView.finish(reason: "\(outcome.reason)", outcome.counters)
        } else {
            FileHandle.standardError.write(Data("\nstreamvm: \(outcome.reason)\n".utf8))
        }
        throw ExitCode(RunCommand.status(for: outcome.reason))
    }
}

/// Ctrl-C / SIGTERM stop the guest, so the run ends normally and the terminal is restored.
final class SignalStopper: @unchecked Sendable {
    private var sources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "streamvm.boot.signals")

    func install(_ machine: Machine) {
        sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { machine.stop(.stopRequested) }
            source.resume()
            return source
        }
    }

    func cancel() { sources.forEach { $0.cancel() } }
}

/// Holds the control API server started inside `boot`, so the command can stop it afterwards.
private final class ControlServerHolder: @unchecked Sendable {
    var server: ControlAPIServer?
}

/// Stream-boot's own figures on the control API's `/metrics`, beside the VMM's.
enum StreamMetrics {
    static func samples(_ counters: StreamBootSession.Live.Counters) -> [MetricSample] {
        var samples = [
            MetricSample(name: "streamvm_stream_received_bytes_total", help: "Response bytes received from origins (compressed).",
                         kind: .counter, value: Double(counters.bytesReceived)),
            MetricSample(name: "streamvm_stream_image_bytes", help: "Stored (compressed) bytes of everything this run reads.",
                         kind: .gauge, value: Double(counters.imageBytes)),
            MetricSample(name: "streamvm_stream_cache_hit_chunks", help: "Chunks that were in the local cache when the run began.",
                         kind: .gauge, value: Double(counters.cachedChunks)),
            MetricSample(name: "streamvm_stream_cache_hit_bytes", help: "Stored bytes of the chunks that were in the local cache when the run began.",
                         kind: .gauge, value: Double(counters.cachedBytes)),
            MetricSample(name: "streamvm_stream_buffered_bytes", help: "Startup bytes that were local when the guest started (or so far, before).",
                         kind: .gauge, value: Double(counters.bufferedBytes)),
            MetricSample(name: "streamvm_stream_first_touches_total", help: "Image chunks the guest touched for the first time.",
                         kind: .counter, value: Double(counters.firstTouches)),
            MetricSample(name: "streamvm_stream_stalls_total", help: "First touches the guest had to wait for (demand misses).",
                         kind: .counter, value: Double(counters.stalls)),
            MetricSample(name: "streamvm_stream_stall_seconds_total", help: "Time the guest waited for streamed bytes.",
                         kind: .counter, value: counters.stallSeconds),
        ]
        if let start = counters.startSeconds {
            samples.append(MetricSample(name: "streamvm_stream_start_seconds", help: "Seconds from the start of boot until the guest ran.",
                                        kind: .gauge, value: start))
        }
        if let ready = counters.readySeconds {
            samples.append(MetricSample(name: "streamvm_stream_ready_seconds", help: "Seconds from the start of boot until the appliance printed its ready marker.",
                                        kind: .gauge, value: ready))
        }
        return samples
    }
}
