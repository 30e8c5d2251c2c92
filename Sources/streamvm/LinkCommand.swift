import ArgumentParser
import Benchmarks
import Catalog
import Dispatch
import Foundation

/// `streamvm link`: an emulated WAN link in front of a local server (the benchmarks' `ShapingProxy`:
/// one shared bottleneck each way, a fixed round trip, a one-BDP router queue), so a demo or an
/// operator can see what stream-booting does over a slow link without another machine.
struct LinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "link",
        abstract: "Emulate a WAN link to a local HTTP server: listen on a loopback port and forward through a shaped bottleneck.")

    @Argument(help: "The server to forward to, http://127.0.0.1:PORT (loopback only).")
    var upstream: String

    @Option(help: "Bottleneck rate in Mbit/s, each direction.")
    var rate: Double = 20

    @Option(help: "Round-trip propagation delay in milliseconds.")
    var rtt: Double = 60

    @Option(name: .customLong("url-file"), help: "Write the link's URL to this file once it listens (for scripts).")
    var urlFile: String?

    func validate() throws {
        guard rate.isFinite, rate > 0, rate <= 100_000 else { throw ValidationError("--rate: \(rate) Mbit/s is not in (0, 100000]") }
        guard rtt.isFinite, rtt >= 0, rtt <= 10_000 else { throw ValidationError("--rtt: \(rtt) ms is not in [0, 10000]") }
        _ = try Self.loopbackPort(upstream)
    }

    /// The port of an `http://127.0.0.1:PORT` URL; anything else is refused by name.
    static func loopbackPort(_ url: String) throws -> UInt16 {
        guard let components = URLComponents(string: url), components.scheme == "http",
              components.host == "127.0.0.1" || components.host == "localhost",
              let port = components.port, (1...65_535).contains(port), components.path.isEmpty || components.path == "/" else {
            throw ValidationError("upstream: '\(url)' is not http://127.0.0.1:PORT")
        }
        return UInt16(port)
    }

    func run() throws {
        let proxy = try ShapingProxy(upstreamPort: try Self.loopbackPort(upstream), rateBitsPerSecond: rate * 1e6, rttSeconds: rtt / 1000)
        if let urlFile { try AtomicFile.write(Data((proxy.url + "\n").utf8), to: urlFile) }
        print("link: \(proxy.url) -> \(upstream), \(rate) Mbit/s each way, \(rtt) ms round trip (Ctrl-C ends it)")
        let done = DispatchSemaphore(value: 0)
        let queue = DispatchQueue(label: "streamvm.link.signals")
        let sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { done.signal() }
            source.resume()
            return source
        }
        done.wait()
        sources.forEach { $0.cancel() }
        proxy.stop()
        print("link: \(proxy.connectionsAccepted) connections forwarded")
    }
}
