import Foundation
import StreamClient

/// Runs Debian's `h2load` (nghttp2-client) and reads its results: throughput from its summary, and
/// latency percentiles from its per-request log (`--log-file`: start µs, status, duration µs).
public struct H2Load: Sendable {
    public struct Load: Sendable, Codable {
        /// Total requests per run.
        public var requests: Int
        /// Connections (h2load -c).
        public var clients: Int
        /// Concurrent streams per connection (h2load -m); clients × streams is the concurrency.
        public var streamsPerClient: Int
        /// h2load worker threads (-t).
        public var threads: Int

        public init(requests: Int, clients: Int, streamsPerClient: Int, threads: Int) {
            self.requests = requests
            self.clients = clients
            self.streamsPerClient = streamsPerClient
            self.threads = threads
        }
    }

    public struct Result: Sendable, Codable {
        public var requestsPerSecond: Double
        public var megabytesPerSecond: Double
        public var succeeded: Int
        public var failed: Int
        public var p50Microseconds: Double
        public var p99Microseconds: Double
    }

    let executable: String
    let workDirectory: String
    /// A taskset CPU list to pin h2load to (nil: wherever the scheduler puts it).
    var cpus: String? = nil

    /// `urls` all on one origin; h2load cycles through them.
    func run(urls: [String], load: Load, label: String) throws -> Result {
        let urlFile = "\(workDirectory)/\(label)-urls.txt"
        let logFile = "\(workDirectory)/\(label)-requests.log"
        try urls.joined(separator: "\n").appending("\n").write(toFile: urlFile, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: logFile)
        let arguments = [
            "-i", urlFile, "-n", String(load.requests), "-c", String(load.clients),
            "-m", String(load.streamsPerClient), "-t", String(load.threads), "--log-file=\(logFile)",
        ]
        let output = try SpawnedProcess.runChecked(executable, arguments: arguments, cpus: cpus)
        return try Self.parse(summary: output, log: String(contentsOfFile: logFile, encoding: .utf8))
    }

    /// Reads "finished in 2.01s, 49751.24 req/s, 2.23GB/s" and "requests: … N succeeded, M failed".
    static func parse(summary: String, log: String) throws -> Result {
        guard let finished = summary.split(separator: "\n").first(where: { $0.hasPrefix("finished in") }) else {
            throw ClientError.benchmark("h2load printed no summary:\n\(summary.suffix(2000))")
        }
        let fields = finished.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard fields.count >= 3, let rate = Double(fields[1].replacingOccurrences(of: " req/s", with: "")) else {
            throw ClientError.benchmark("cannot read h2load summary '\(finished)'")
        }
        let megabytes = try parseRate(fields[2])
        func count(_ word: String) -> Int {
            guard let line = summary.split(separator: "\n").first(where: { $0.hasPrefix("requests:") }) else { return 0 }
            let parts = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let part = parts.first(where: { $0.hasSuffix(" " + word) }) else { return 0 }
            return Int(part.split(separator: " ").first ?? "") ?? 0
        }
        var durations = [Double]()
        for line in log.split(separator: "\n") {
            let columns = line.split(separator: "\t")
            if columns.count >= 3, let micros = Double(columns[2]) { durations.append(micros) }
        }
        durations.sort()
        func percentile(_ p: Double) -> Double {
            guard !durations.isEmpty else { return 0 }
            // Nearest-rank percentile.
            let rank = Int((p * Double(durations.count)).rounded(.up))
            return durations[min(durations.count - 1, max(0, rank - 1))]
        }
        return Result(requestsPerSecond: rate, megabytesPerSecond: megabytes, succeeded: count("succeeded"),
                      failed: count("failed") + count("errored"), p50Microseconds: percentile(0.50), p99Microseconds: percentile(0.99))
    }

    /// "2.23GB/s", "512.10MB/s", "900.00KB/s" in MB/s (h2load uses powers of 1024).
    static func parseRate(_ text: String) throws -> Double {
        let units: [(String, Double)] = [("GB/s", 1024), ("MB/s", 1), ("KB/s", 1.0 / 1024), ("B/s", 1.0 / 1048576)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)) { return value * scale }
        }
        throw ClientError.benchmark("cannot read h2load rate '\(text)'")
    }
}
