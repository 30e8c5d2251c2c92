import Benchmarks
import ArgumentParser
import Foundation
import Logging

struct BenchServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve 64 KiB chunks over h2c (or h2 over TLS) with streamvm serve and nginx, load both with h2load, compare.")

    @Option(help: "Number of distinct chunks in the catalogue.")
    var chunks = 2048

    @Option(help: "Requests per round.")
    var requests = 100_000

    @Option(help: "h2load connections.")
    var clients = 4

    @Option(help: "Concurrent streams per connection (clients × streams = concurrency).")
    var streams = 16

    @Option(help: "h2load threads.")
    var threads = 1

    @Option(help: "Alternating rounds per server.")
    var rounds = 3

    @Flag(help: "h2 over TLS (ALPN) instead of h2c; both servers use one self-signed certificate made with openssl.")
    var tls = false

    @Option(name: .customLong("server-cpus"), help: "taskset CPU list both servers are pinned to, e.g. 0 or 0-1 (default: not pinned).")
    var serverCPUs: String?

    @Option(name: .customLong("client-cpus"), help: "taskset CPU list h2load is pinned to (default: not pinned).")
    var clientCPUs: String?

    @Option(help: "Write the JSON report here.")
    var json: String?

    @Option(name: .customLong("work-dir"), help: "Keep catalogue and logs in this directory (default: a temporary one, removed).")
    var workDirectory: String?

    func run() throws {
        var settings = ServeBenchmark.Settings(serverExecutable: try Self.ownExecutable())
        settings.chunkCount = max(1, chunks)
        settings.load = .init(requests: max(1, requests), clients: max(1, clients), streamsPerClient: max(1, streams), threads: max(1, threads))
        settings.rounds = max(1, rounds)
        settings.tls = tls
        settings.serverCPUs = serverCPUs
        settings.clientCPUs = clientCPUs
        if let workDirectory {
            try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
            settings.workDirectory = (workDirectory as NSString).standardizingPath
        }
        let report = try ServeBenchmark(settings: settings, logger: Logger(label: "streamvm.bench")).run { print($0) }
        print(ServeBenchmark.markdownTable(report))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
    }

    /// The running binary, so the benchmark serves with exactly this build.
    static func ownExecutable() throws -> String {
        let path = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        return path
    }
}
