import Benchmarks
import ArgumentParser
import Catalog
import Foundation
import Logging
import StreamBoot
import StreamClient

/// `streamvm bench stream`: time to ready and stalls per prefetch mode over an emulated WAN.
struct BenchStreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream",
        abstract: "Stream-boot an appliance over an emulated WAN with each prefetch mode; JSON, a table and an SVG timeline.",
        discussion: """
            The appliance must run on this host's KVM and print its ready marker. Here that is a test-guest \
            replay appliance (scripts/make-replay-appliance, or scripts/make-snapshot-replay-appliance for a \
            memory snapshot); the Linux appliance runs in the hardware lab. A directory with memory.img and \
            vmstate.json (streamvm snapshot --at-ready) is resumed in every run, its RAM streamed. \
            Say which one a figure comes from (--source is copied into the JSON).
            """)

    @Option(help: "Appliance directory to publish and stream (appliance.json, kernel, disk.img [, memory.img, vmstate.json]).")
    var appliance: String

    @Option(help: "Link profile: dsl (7.2 Mbit/s, 30 ms), lte (20 Mbit/s, 60 ms) or fast (100 Mbit/s, 20 ms).")
    var profile = "lte"

    @Flag(help: "One training run instead of three.")
    var quick = false

    @Option(help: "Training runs before the evaluated ones (0–10; overrides --quick). Without any, workingset and vtube have no model and fall back to on-demand.")
    var trainingRuns: Int?

    @Option(help: "Modes to evaluate, comma-separated, in this order (default: full,none,workingset,vtube). Each mode has its own oracle; without none, the former single oracle counts only what must be whole before the start (a lower bound).")
    var modes = "full,none,workingset,vtube"

    @Option(help: "Where the figures come from, e.g. 'testguest replay on the PVM dev host'.")
    var source = "unspecified"

    @Option(help: "Time dilation factor N (DieCast): the profile's rate is divided by N and its RTT multiplied by N, for a guest whose CPU is N times slower than the hardware the profile stands for (the TCG lab).")
    var dilation = 1.0

    @Flag(help: "Resumes install prefetched memory pages into guest RAM ahead of the guest (see boot --install-ahead).")
    var installAhead = false

    @Flag(help: "Resumes map a faulting page's whole 64 KiB chunk (experimental; see boot --fault-around).")
    var faultAround = false

    @Option(help: "What vtube buffers before the guest starts: ready (what comes before ready; the default) or path (the whole predicted path).")
    var startupBuffer = StartupBuffer.ready

    @Option(help: "Think time in seconds between the steps of the appliance's session (passed as streamvm.think; default: the appliance's own).")
    var think: Double?

    @Option(help: "Seconds each boot may run before it is stopped.")
    var timeout = 600.0

    @Option(help: "Write the JSON report to this file.")
    var json: String?

    @Option(help: "Write the SVG timeline to this file.")
    var svg: String?

    func run() async throws {
        guard var chosen = StreamBenchmark.Profile.all.first(where: { $0.name == profile }) else {
            throw ValidationError("--profile must be one of \(StreamBenchmark.Profile.all.map(\.name).joined(separator: ", "))")
        }
        guard dilation >= 1, dilation <= 1000 else { throw ValidationError("--dilation must be between 1 and 1000") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        chosen.rateMbit /= dilation
        chosen.rttMs *= dilation
        var logger = Logger(label: "streamvm.bench.stream")
        logger.logLevel = .warning
        var benchmark = StreamBenchmark(applianceDirectory: appliance, profile: chosen, logger: logger)
        benchmark.trainingRuns = trainingRuns ?? (quick ? 1 : 3)
        guard (0...10).contains(benchmark.trainingRuns) else { throw ValidationError("--training-runs must be between 0 and 10") }
        do {
            benchmark.modes = try StreamBenchmark.modes(from: modes)
        } catch {
            throw ValidationError("--modes: \(error)")
        }
        benchmark.source = source
        benchmark.timeoutSeconds = timeout
        benchmark.timerScale = dilation
        benchmark.installAhead = installAhead
        benchmark.faultAround = faultAround
        benchmark.startupBuffer = startupBuffer
        // The guest's clock is not dilated (no TSC scaling in the lab): the appliance is told N so
        // that its timed pauses (think time) last N times longer, as they would under DieCast.
        var arguments: [String] = []
        if let think {
            guard think >= 0, think <= 3600 else { throw ValidationError("--think must be between 0 and 3600 seconds") }
            arguments.append(String(format: "streamvm.think=%.3f", think)) // plain decimals: the guest's shell checks them
        }
        if dilation != 1 { arguments.append(String(format: "streamvm.dilation=%.3f", dilation)) }
        benchmark.applianceArguments = try ApplianceArguments(arguments)
        benchmark.progress = { line in FileHandle.standardError.write(Data("bench stream: \(line)\n".utf8)) }
        // What the proxy really delivers where the benchmark runs (it may run on a slow CPU, e.g. the lab).
        let link = try LinkAccuracyProbe.measure(rateBitsPerSecond: chosen.rateMbit * 1e6, rttSeconds: chosen.rttMs / 1000)
        var (report, timelines) = try await benchmark.run()
        report.link = link
        report.dilation = dilation
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = try encoder.encode(report)
        if let json { try AtomicFile.write(bytes, to: json) }
        if let svg {
            try AtomicFile.write(Data(StreamBenchmark.timelineSVG(timelines, title: "\(report.appliance), \(chosen.name): bytes and stalls per mode").utf8), to: svg)
        }
        print(String(decoding: bytes, as: UTF8.self))
        func figure(_ value: Double?, _ format: String = "%.2f") -> String { value.map { String(format: format, $0) } ?? "—" }
        print("\n| mode | TTR (s) | its oracle (s) | TTR ÷ oracle | stalls after ready | stall s | MB |\n|---|---|---|---|---|---|---|")
        for mode in ["full", "none", "workingset", "vtube"] {
            guard let result = report.modes[mode] else { continue }
            print("| \(mode) | \(figure(result.ttr_s)) | \(figure(result.oracle_ttr_s)) | \(figure(result.oracle_ratio)) | \(result.stall_count) | "
                  + String(format: "%.2f | %.2f |", result.stall_s, Double(result.bytes) / 1e6))
        }
        print("\neach mode's oracle: RTT + the compressed bytes its own guest touched before READY ÷ rate (\(report.source))")
        print(String(format: "the former single oracle (none run's bytes, charged to every mode): %.2f s", report.none_run_oracle_ttr_s)
              + (report.none_run_oracle_basis == .startOnly ? " — a lower bound only: no none run reached READY" : ""))
        print(String(format: "link measured %.2f Mbit/s, RTT %.1f ms (nominal %.2f Mbit/s, %.1f ms); dilation %.2f",
                     link.measuredRateMbit, link.measuredRTTms, link.nominalRateMbit, link.nominalRTTms, dilation))
    }
}
