import Catalog
import Foundation
import Logging
import StreamClient

/// `streamvm bench serve`: 64 KiB chunks over h2c (or h2 over TLS) on loopback, `streamvm serve` and
/// nginx serving the same catalogue directory, loaded by h2load in the same run, rounds alternating
/// between the two so that background noise on the host affects both alike. Both servers can be
/// pinned to the same CPUs and h2load to others; each server's resident memory is sampled while it
/// is under load.
public struct ServeBenchmark: Sendable {
    public struct Settings: Sendable, Codable {
        public var chunkCount = 2048
        public var chunkSize = 64 << 10
        public var load = H2Load.Load(requests: 100_000, clients: 4, streamsPerClient: 16, threads: 1)
        public var rounds = 3
        public var serverExecutable: String
        /// The nginx found on this host (recorded in the report; `NginxProcess` starts it).
        public var nginxExecutable = NginxProcess.executable ?? "/usr/sbin/nginx"
        public var h2loadExecutable = "/usr/bin/h2load"
        /// Kept (not deleted) when set, for inspecting logs.
        public var workDirectory: String?
        /// h2 over TLS (ALPN) instead of h2c; both servers get the same self-signed certificate.
        public var tls = false
        /// taskset CPU list both servers are pinned to (e.g. "0" or "0-1"); nil: not pinned.
        public var serverCPUs: String?
        /// taskset CPU list h2load is pinned to; nil: not pinned.
        public var clientCPUs: String?

        public init(serverExecutable: String) { self.serverExecutable = serverExecutable }

        public var concurrentStreams: Int { load.clients * load.streamsPerClient }
    }

    public struct ServerFigures: Sendable, Codable {
        public var rounds: [H2Load.Result]
        /// Medians over rounds.
        public var requestsPerSecond: Double
        public var megabytesPerSecond: Double
        public var p50Microseconds: Double
        public var p99Microseconds: Double
        public var failedRequests: Int
        /// Largest resident memory (VmRSS, nginx: master and workers) sampled during any round.
        public var peakResidentBytes: Int
        /// Server CPU time (user + system, all threads or processes) per request, median over rounds.
        public var cpuMicrosecondsPerRequest: Double
        public var roundCPUMicrosecondsPerRequest: [Double]
    }

    public struct Report: Sendable, Codable {
        public var settings: Settings
        public var host: String
        public var storedBytes: Int
        public var streamvm: ServerFigures
        public var nginx: ServerFigures
        /// streamvm requests/s ÷ nginx requests/s.
        public var ratioToNginx: Double
        /// streamvm p99 ÷ nginx p99 (≤ 1: no worse than nginx).
        public var p99RatioToNginx: Double
        /// 1-minute load average when the run started and when it ended (the host is shared).
        public var loadAverageAtStart: Double
        public var loadAverageAtEnd: Double
    }

    let settings: Settings
    let logger: Logger

    public init(settings: Settings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) throws -> Report {
        let loadAtStart = MemorySampler.loadAverage()
        let work = try settings.workDirectory ?? makeTemporaryDirectory()
        defer { if settings.workDirectory == nil { try? FileManager.default.removeItem(atPath: work) } }
        // nginx workers and the server read the catalogue; keep the tree world-readable.
        chmod(work, 0o755)
        let catalogRoot = "\(work)/catalog"
        let directory = try CatalogDirectory(root: catalogRoot, create: true)
        progress("making \(settings.chunkCount) chunks of \(settings.chunkSize / 1024) KiB")
        let (objects, storedBytes) = try SyntheticChunks.makeCatalogue(in: directory, count: settings.chunkCount, size: settings.chunkSize)

        let tls = try settings.tls ? SelfSignedCertificate.make(in: work) : nil
        let streamvmPort = try LoopbackPort.free()
        var serveArguments = ["serve", "--catalog", catalogRoot, "--host", "127.0.0.1", "--port", String(streamvmPort), "--log-level", "warning"]
        if let tls { serveArguments += ["--tls-cert", tls.certificate, "--tls-key", tls.key] }
        let server = try SpawnedProcess(executable: settings.serverExecutable, arguments: serveArguments, logPath: "\(work)/streamvm-serve.log",
                                        cpus: settings.serverCPUs)
        defer { server.stop() }
        try LoopbackPort.waitUntilAccepting(streamvmPort, process: server, timeout: 30)

        guard let nginx = try NginxProcess(root: catalogRoot, tls: tls, tuning: .benchmark(workers: settings.serverCPUs.map(Self.cpuCount)),
                                           cpus: settings.serverCPUs) else {
            throw ClientError.benchmark("nginx not found; install Debian's nginx-light (apt-get install nginx-light)")
        }
        defer { nginx.stop() }
        let nginxPort = nginx.port

        var h2load = H2Load(executable: settings.h2loadExecutable, workDirectory: work)
        h2load.cpus = settings.clientCPUs
        let scheme = settings.tls ? "https" : "http"
        func urls(_ port: UInt16) -> [String] { objects.map { "\(scheme)://127.0.0.1:\(port)/\($0.path)" } }
        // Warm-up: every object once through each server (the server verifies on first read; nginx
        // and the kernel fill their caches), so rounds measure steady-state serving.
        let warmUp = H2Load.Load(requests: objects.count, clients: 1, streamsPerClient: 16, threads: 1)
        progress("warming up both servers")
        _ = try h2load.run(urls: urls(streamvmPort), load: warmUp, label: "warmup-streamvm")
        _ = try h2load.run(urls: urls(nginxPort), load: warmUp, label: "warmup-nginx")

        /// One round against one server, with its memory sampled throughout.
        func round(_ name: String, port: UInt16, pid: pid_t, number: Int) throws -> (H2Load.Result, Int, Double) {
            let sampler = MemorySampler(process: pid)
            let cpuBefore = ProcessCPUTime.seconds(treeOf: pid)
            let result: H2Load.Result
            do { result = try h2load.run(urls: urls(port), load: settings.load, label: "round\(number)-\(name)") } catch {
                _ = sampler.stop()
                throw error
            }
            let cpuPerRequest = (ProcessCPUTime.seconds(treeOf: pid) - cpuBefore) * 1e6 / Double(max(1, result.succeeded + result.failed))
            let peak = sampler.stop()
            progress("round \(number) \(name): " + String(format: "%.0f req/s, %.1f MB/s, p50 %.0f µs, p99 %.0f µs, %d failed, peak RSS %.1f MiB",
                                                         result.requestsPerSecond, result.megabytesPerSecond, result.p50Microseconds, result.p99Microseconds,
                            result.failed, Double(peak) / 1_048_576) + String(format: ", %.1f µs CPU per request", cpuPerRequest))
            return (result, peak, cpuPerRequest)
        }
        var ours = [H2Load.Result](), theirs = [H2Load.Result]()
        var ourPeak = 0, theirPeak = 0
        var ourCPU = [Double](), theirCPU = [Double]()
        for number in 1...max(1, settings.rounds) {
            let (a, aPeak, aCPU) = try round("streamvm", port: streamvmPort, pid: server.pid, number: number)
            let (b, bPeak, bCPU) = try round("nginx", port: nginxPort, pid: nginx.pid, number: number)
            ourCPU.append(aCPU)
            theirCPU.append(bCPU)
            ours.append(a)
            theirs.append(b)
            ourPeak = max(ourPeak, aPeak)
            theirPeak = max(theirPeak, bPeak)
        }
        let streamvm = Self.summarise(ours, peakResidentBytes: ourPeak, cpu: ourCPU)
        let reference = Self.summarise(theirs, peakResidentBytes: theirPeak, cpu: theirCPU)
        return Report(settings: settings, host: Self.hostDescription(), storedBytes: storedBytes, streamvm: streamvm, nginx: reference,
                      ratioToNginx: reference.requestsPerSecond > 0 ? streamvm.requestsPerSecond / reference.requestsPerSecond : 0,
                      p99RatioToNginx: reference.p99Microseconds > 0 ? streamvm.p99Microseconds / reference.p99Microseconds : 0,
                      loadAverageAtStart: loadAtStart, loadAverageAtEnd: MemorySampler.loadAverage())
    }

    /// How many CPUs a taskset list such as "0", "0-1" or "0,2-3" names.
    static func cpuCount(_ list: String) -> Int {
        var count = 0
        for part in list.split(separator: ",") {
            let bounds = part.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            if bounds.count == 2, bounds[1] >= bounds[0] { count += bounds[1] - bounds[0] + 1 } else if bounds.count == 1 { count += 1 }
        }
        return max(1, count)
    }

    static func summarise(_ rounds: [H2Load.Result], peakResidentBytes: Int, cpu: [Double]) -> ServerFigures {
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        return ServerFigures(rounds: rounds, requestsPerSecond: median(rounds.map(\.requestsPerSecond)),
                             megabytesPerSecond: median(rounds.map(\.megabytesPerSecond)),
                             p50Microseconds: median(rounds.map(\.p50Microseconds)), p99Microseconds: median(rounds.map(\.p99Microseconds)),
                             failedRequests: rounds.map(\.failed).reduce(0, +), peakResidentBytes: peakResidentBytes,
                             cpuMicrosecondsPerRequest: median(cpu), roundCPUMicrosecondsPerRequest: cpu)
    }

    /// The Markdown table of one run.
    public static func markdownTable(_ report: Report) -> String {
        func row(_ name: String, _ f: ServerFigures, _ ratio: String) -> String {
            "| \(name) | " + String(format: "%.0f | %.1f | %.0f | %.0f | %d | %.1f | %.1f", f.requestsPerSecond, f.megabytesPerSecond,
                                    f.p50Microseconds, f.p99Microseconds, f.failedRequests, Double(f.peakResidentBytes) / 1_048_576,
                                    f.cpuMicrosecondsPerRequest) + " | \(ratio) |"
        }
        let s = report.settings
        let pinning = "servers on CPUs \(s.serverCPUs ?? "any"), h2load on CPUs \(s.clientCPUs ?? "any")"
        return """
        Serving \(s.chunkCount) chunks of \(s.chunkSize / 1024) KiB (zstd, \(report.storedBytes / 1024) KiB stored) over \(s.tls ? "h2 (TLS)" : "h2c") on \
        loopback; h2load -c \(s.load.clients) -m \(s.load.streamsPerClient) -t \(s.load.threads) (\(s.concurrentStreams) concurrent streams), \
        \(s.load.requests) requests per round, median of \(s.rounds) alternating rounds; \(pinning). Host: \(report.host); load average \
        \(String(format: "%.2f", report.loadAverageAtStart)) at the start, \(String(format: "%.2f", report.loadAverageAtEnd)) at the end.

        | server | requests/s | MB/s | p50 µs | p99 µs | failed | peak RSS MiB | CPU µs/request | ratio to nginx |
        |---|---:|---:|---:|---:|---:|---:|---:|---:|
        \(row("streamvm serve", report.streamvm, String(format: "%.2f (p99 %.2f)", report.ratioToNginx, report.p99RatioToNginx)))
        \(row("nginx", report.nginx, "1.00"))

        """
    }

    static func hostDescription() -> String {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let memory = Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)
        return String(format: "%d cores, %.0f GiB", cores, memory)
    }

    private func makeTemporaryDirectory() throws -> String {
        var template = Array("/tmp/streamvm-bench-XXXXXX".utf8CString)
        guard let path = mkdtemp(&template) else { throw ClientError.io(path: "/tmp", errno: errno) }
        return String(cString: path)
    }
}
