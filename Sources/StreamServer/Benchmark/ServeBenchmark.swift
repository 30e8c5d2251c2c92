import Catalog
import Foundation
import Logging

/// `streamvm bench serve`: 64 KiB chunks over h2c on loopback, `streamvm serve` and nginx serving the
/// same catalogue directory, loaded by h2load in the same run, rounds alternating between the two so
/// that background noise on the host affects both alike.
public struct ServeBenchmark: Sendable {
    public struct Settings: Sendable, Codable {
        public var chunkCount = 2048
        public var chunkSize = 64 << 10
        public var load = H2Load.Load(requests: 100_000, clients: 4, streamsPerClient: 16, threads: 1)
        public var rounds = 3
        public var serverExecutable: String
        public var nginxExecutable = NginxReference.defaultExecutable
        public var h2loadExecutable = "/usr/bin/h2load"
        /// Kept (not deleted) when set, for inspecting logs.
        public var workDirectory: String?

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
    }

    public struct Report: Sendable, Codable {
        public var settings: Settings
        public var host: String
        public var storedBytes: Int
        public var streamvm: ServerFigures
        public var nginx: ServerFigures
        /// streamvm requests/s ÷ nginx requests/s.
        public var ratioToNginx: Double
    }

    let settings: Settings
    let logger: Logger

    public init(settings: Settings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) throws -> Report {
        let work = try settings.workDirectory ?? makeTemporaryDirectory()
        defer { if settings.workDirectory == nil { try? FileManager.default.removeItem(atPath: work) } }
        // nginx workers and the server read the catalogue; keep the tree world-readable.
        chmod(work, 0o755)
        let catalogRoot = "\(work)/catalog"
        let directory = try CatalogDirectory(root: catalogRoot, create: true)
        progress("making \(settings.chunkCount) chunks of \(settings.chunkSize / 1024) KiB")
        let (objects, storedBytes) = try SyntheticChunks.makeCatalogue(in: directory, count: settings.chunkCount, size: settings.chunkSize)

        let streamvmPort = try ChildProcess.freePort()
        let server = try ChildProcess(settings.serverExecutable, arguments: [
            "serve", "--catalog", catalogRoot, "--host", "127.0.0.1", "--port", String(streamvmPort), "--log-level", "warning",
        ], logFile: "\(work)/streamvm-serve.log")
        defer { server.stop() }
        try ChildProcess.waitForListener(port: streamvmPort, timeout: 30, child: server)

        let nginxPort = try ChildProcess.freePort()
        let nginx = try NginxReference.start(executable: settings.nginxExecutable, root: catalogRoot, port: nginxPort, workDirectory: work)
        defer { nginx.stop() }
        try ChildProcess.waitForListener(port: nginxPort, timeout: 30, child: nginx)

        let h2load = H2Load(executable: settings.h2loadExecutable, workDirectory: work)
        func urls(_ port: Int) -> [String] { objects.map { "http://127.0.0.1:\(port)/\($0.path)" } }
        // Warm-up: every object once through each server (the server verifies on first read; nginx
        // and the kernel fill their caches), so rounds measure steady-state serving.
        let warmUp = H2Load.Load(requests: objects.count, clients: 1, streamsPerClient: 16, threads: 1)
        progress("warming up both servers")
        _ = try h2load.run(urls: urls(streamvmPort), load: warmUp, label: "warmup-streamvm")
        _ = try h2load.run(urls: urls(nginxPort), load: warmUp, label: "warmup-nginx")

        var ours = [H2Load.Result](), theirs = [H2Load.Result]()
        for round in 1...max(1, settings.rounds) {
            let a = try h2load.run(urls: urls(streamvmPort), load: settings.load, label: "round\(round)-streamvm")
            progress(String(format: "round %d streamvm: %.0f req/s, %.1f MB/s, p50 %.0f µs, p99 %.0f µs", round,
                            a.requestsPerSecond, a.megabytesPerSecond, a.p50Microseconds, a.p99Microseconds))
            let b = try h2load.run(urls: urls(nginxPort), load: settings.load, label: "round\(round)-nginx")
            progress(String(format: "round %d nginx:    %.0f req/s, %.1f MB/s, p50 %.0f µs, p99 %.0f µs", round,
                            b.requestsPerSecond, b.megabytesPerSecond, b.p50Microseconds, b.p99Microseconds))
            ours.append(a)
            theirs.append(b)
        }
        let streamvm = Self.summarise(ours), reference = Self.summarise(theirs)
        return Report(settings: settings, host: Self.hostDescription(), storedBytes: storedBytes, streamvm: streamvm, nginx: reference,
                      ratioToNginx: reference.requestsPerSecond > 0 ? streamvm.requestsPerSecond / reference.requestsPerSecond : 0)
    }

    static func summarise(_ rounds: [H2Load.Result]) -> ServerFigures {
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        return ServerFigures(rounds: rounds, requestsPerSecond: median(rounds.map(\.requestsPerSecond)),
                             megabytesPerSecond: median(rounds.map(\.megabytesPerSecond)),
                             p50Microseconds: median(rounds.map(\.p50Microseconds)), p99Microseconds: median(rounds.map(\.p99Microseconds)),
                             failedRequests: rounds.map(\.failed).reduce(0, +))
    }

    /// The Markdown table for BENCHMARKS.md.
    public static func markdownTable(_ report: Report) -> String {
        func row(_ name: String, _ f: ServerFigures, _ ratio: String) -> String {
            "| \(name) | " + String(format: "%.0f | %.1f | %.0f | %.0f | %d", f.requestsPerSecond, f.megabytesPerSecond,
                                    f.p50Microseconds, f.p99Microseconds, f.failedRequests) + " | \(ratio) |"
        }
        let s = report.settings
        return """
        Serving \(s.chunkCount) chunks of \(s.chunkSize / 1024) KiB (zstd, \(report.storedBytes / 1024) KiB stored) over h2c on loopback; \
        h2load -c \(s.load.clients) -m \(s.load.streamsPerClient) (\(s.concurrentStreams) concurrent streams), \(s.load.requests) requests \
        per round, median of \(s.rounds) alternating rounds. Host: \(report.host).

        | server | requests/s | MB/s | p50 µs | p99 µs | failed | ratio to nginx |
        |---|---:|---:|---:|---:|---:|---:|
        \(row("streamvm serve", report.streamvm, String(format: "%.2f", report.ratioToNginx)))
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
        guard let path = mkdtemp(&template) else { throw ServerError.io(path: "/tmp", errno: errno) }
        return String(cString: path)
    }
}
