import Benchmarks
import ArgumentParser
import Foundation
import StreamClient

struct BenchClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Cached read latency, cold goodput over emulated WAN links vs curl, demand-miss latency under prefetch.")

    @Option(help: "Published catalogue directory to serve (with nginx on loopback).")
    var catalog: String

    @Option(help: "Appliance to read, as name or name@version.")
    var appliance: String

    @Option(help: "Public key the catalogue is signed with.")
    var trust: String?

    @Flag(help: "Accept the catalogue without a trusted key.")
    var insecure = false

    @Option(help: "Link profiles as name:Mbit:RTTms (repeatable; default lte:20:60 and fast:100:20).")
    var profile: [String] = []

    @Flag(help: "Fewer samples and a bounded transfer per profile (a minute instead of several).")
    var quick = false

    @Option(help: "Open prefetch window in bandwidth-delay products (default: the fetcher's, 3).")
    var openWindow: Double?

    @Option(help: "Write the JSON report here as well as to standard output.")
    var json: String?

    func run() async throws {
        let profiles = try profile.isEmpty ? ClientBenchmark.defaultProfiles : profile.map(Self.parseProfile)
        guard let nginx = try NginxProcess(root: catalog) else {
            throw ValidationError("nginx is not installed (apt-get install nginx-light); the benchmark serves the catalogue with it")
        }
        defer { nginx.stop() }
        let work = NSTemporaryDirectory() + "streamvm-bench-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: work) }
        // The same catalogue over h2 with TLS, where libcurl 7.88 can reuse one connection.
        let tls = try SelfSignedCertificate.make(in: "\(work)/tls")
        guard let tlsNginx = try NginxProcess(root: catalog, tls: tls) else { throw ValidationError("nginx is not installed") }
        defer { tlsNginx.stop() }
        let origins = [ClientBenchmark.Transport(name: "h2c", port: nginx.port, tls: false),
                       ClientBenchmark.Transport(name: "h2-tls", port: tlsNginx.port, tls: true)]
        var benchmark = ClientBenchmark(origins: origins, caFile: tls.certificate,
                                        trust: try TrustSource.policy(trust: trust, insecure: insecure, trustDirectory: TrustSource.directory(flag: nil, config: try ConfigFileOption.load(path: nil).file)), appliance: appliance,
                                        workDirectory: work, quick: quick, logger: commandLogger("streamvm.bench"))
        if let openWindow {
            guard openWindow > 0 else { throw ValidationError("--open-window must be positive") }
            benchmark.openWindowInBDPs = openWindow
        }
        let report = try await benchmark.run(profiles: profiles)
        try printJSON(report)
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
    }

    static func parseProfile(_ text: String) throws -> ClientBenchmark.Profile {
        let parts = text.split(separator: ":")
        guard parts.count == 3, let rate = Double(parts[1]), let rtt = Double(parts[2]), rate > 0, rtt >= 0 else {
            throw ValidationError("--profile '\(text)' is not name:Mbit:RTTms")
        }
        return ClientBenchmark.Profile(name: String(parts[0]), rateMbit: rate, rttMs: rtt)
    }
}
