import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamServer

/// Clients that vanish mid-transfer — h2load killed while a large object and many streams are being sent,
/// on h2c and over TLS — never crash the server and leave no descriptor behind; stopping the server
/// while streams are in flight does not crash it either (the swift-nio abort "Deinited
/// NIOAsyncWriter without calling finish()" once noted in StreamResumeTests).
@Suite(.serialized) struct VanishingClientTests {
    /// A catalogue with a 32 MiB model (too large for the memory cache: answered by the router,
    /// streamed) besides its chunks, and the targets a client asks for: the model and every chunk.
    static func catalogueWithLargeObject() throws -> (TestCatalogue, [String]) {
        let catalogue = try TestCatalogue(chunkCount: 8)
        let model = [UInt8](repeating: UInt8(ascii: "m"), count: 32 << 20)
        let object = CatalogObject.model(Digest.of(model))
        try catalogue.directory.write(object, data: model)
        return (catalogue, ["/" + object.path] + catalogue.chunks.map { "/" + $0.object.path })
    }

    /// Starts h2load fetching `urls` round-robin on 2 connections with 64 streams each, and kills it
    /// (SIGKILL: no goodbye, no GOAWAY) once `answered()` has grown by `answers` (or after 30 s), in
    /// the middle of the transfers. Counting answers, not waiting a fixed time, keeps the cut inside
    /// the transfers on a loaded host too.
    static func vanishingH2load(urls: [String], answered: @escaping @Sendable () -> Double, answers: Double) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: HostTools.h2load!)
        process.arguments = ["-n", "1000000", "-c", "2", "-m", "64"] + urls
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let before = answered()
        try process.run()
        let deadline = ContinuousClock.now + .seconds(30)
        while answered() < before + answers, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        kill(process.processIdentifier, SIGKILL)
        try await offPool { process.waitUntilExit() }
    }

    func vanish(tls: Bool) async throws {
        let (catalogue, targets) = try Self.catalogueWithLargeObject()
        let certificate = tls ? try await TestCertificate.make(in: catalogue.base) : nil
        let server = try await RunningServer.start(catalogue: catalogue) { options in
            options.stallTimeout = .seconds(2)
            options.tlsCertificate = certificate?.certificate
            options.tlsKey = certificate?.key
        }
        let base = (tls ? "https" : "http") + "://127.0.0.1:\(server.port)"
        let protocolArguments = tls ? ["--http2", "--cacert", certificate!.certificate] : ["--http2-prior-knowledge"]
        // Warm up (verifier, thread pool, cached chunks), then the baseline.
        let warm = try await curl(protocolArguments + ["-o", "/dev/null", "-w", "%{http_code}", base + targets[1]])
        #expect(warm.output == "200")
        try await Task.sleep(for: .milliseconds(300))
        let baseline = ConnectionLeakTests.openDescriptors(server, catalogue)
        // Each round: 128 streams at a time over the large model and the chunks, cut off at a
        // different moment.
        let urls = targets.map { base + $0 }
        let answered: @Sendable () -> Double = { metricValue(server, "streamvm_http_requests_total{method=\"GET\",status=\"200\"}") }
        for round in 0..<4 {
            try await Self.vanishingH2load(urls: urls, answered: answered, answers: Double(16 + 16 * round))
        }
        #expect(answered() > 128, "the streams were opened and answered")
        let settled = try await ConnectionLeakTests.settle(server, catalogue, to: baseline, within: 15)
        #expect(settled <= baseline, "descriptors: baseline \(baseline), now \(settled)")
        let after = try await curl(protocolArguments + ["-o", "/dev/null", "-w", "%{http_code} %{size_download}", base + targets[0]])
        #expect(after.output == "200 \(32 << 20)", "the server still serves the large object whole")
        await server.stop()
    }

    @Test(.needsH2load) func clientKilledMidTransferOnH2C() async throws {
        try await vanish(tls: false)
    }

    @Test(.needsOpenSSL, .needsH2load) func clientKilledMidTransferOverTLS() async throws {
        try await vanish(tls: true)
    }

    /// Stopping the server while a slow client has many routed streams in flight: the graceful
    /// shutdown waits `shutdownGrace`, then cancels the connections. Every stream that was created
    /// but not yet served must be finished, not dropped (which traps in swift-nio).
    @Test(.needsH2load) func stoppingWithStreamsInFlightDoesNotCrash() async throws {
        for _ in 0..<3 {
            let (catalogue, targets) = try Self.catalogueWithLargeObject()
            let server = try await RunningServer.start(catalogue: catalogue) { options in
                options.shutdownGrace = .milliseconds(300)
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: HostTools.h2load!)
            // 100 streams of the 32 MiB object on one connection: far more than a moment's transfer.
            process.arguments = ["-n", "100", "-c", "1", "-m", "100", "http://127.0.0.1:\(server.port)" + targets[0]]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            for _ in 0..<50 where metricValue(server, "streamvm_http_requests_total{method=\"GET\",status=\"200\"}") < 10 {
                try await Task.sleep(for: .milliseconds(100))
            }
            // Streams have their answer heads, and most of their 32 MiB bodies are still to be sent.
            #expect(metricValue(server, "streamvm_http_requests_total{method=\"GET\",status=\"200\"}") >= 10)
            #expect(metricValue(server, "streamvm_connections_open") == 1)
            await server.stop()
            kill(process.processIdentifier, SIGKILL)
            try await offPool { process.waitUntilExit() }
            // The process is alive (no abort) and the server let go of every socket and file.
            let left = try await ConnectionLeakTests.settle(server, catalogue, to: 0, within: 10)
            #expect(left == 0)
        }
    }
}
