import CCurl
import Catalog
import Foundation
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient
import Logging

/// `streamvm bench client`: cached read latency and throughput of `LazyImage`, cold goodput through
/// an emulated WAN link compared with `curl` fetching the same objects over the same link, and
/// demand-miss latency while a full prefetch fills the link. Figures are measured, never assumed.
public struct ClientBenchmark: Sendable {
    public struct Profile: Sendable, Codable {
        public var name: String
        public var rateMbit: Double
        public var rttMs: Double
        public init(name: String, rateMbit: Double, rttMs: Double) {
            self.name = name
            self.rateMbit = rateMbit
            self.rttMs = rttMs
        }
        var rateBitsPerSecond: Double { rateMbit * 1e6 }
        var rttSeconds: Double { rttMs / 1000 }
    }

    /// One way to reach the origin: nginx over h2c (prior knowledge) or over h2 with TLS.
    public struct Transport: Sendable, Codable {
        public var name: String
        public var port: UInt16
        public var tls: Bool
        public init(name: String, port: UInt16, tls: Bool) {
            self.name = name
            self.port = port
            self.tls = tls
        }
        func url(port: UInt16) -> String { "\(tls ? "https" : "http")://127.0.0.1:\(port)" }
    }

    /// The issue's two link profiles.
    public static let defaultProfiles = [Profile(name: "lte", rateMbit: 20, rttMs: 60), Profile(name: "fast", rateMbit: 100, rttMs: 20)]

    public struct CachedReads: Sendable, Codable {
        public var reads: Int
        public var p50Microseconds: Double
        public var p99Microseconds: Double
        public var sequentialGBps: Double
        public var sequentialBytes: Int
    }

    public struct DemandMiss: Sendable, Codable {
        public var samples: Int
        public var p50Milliseconds: Double
        public var maxMilliseconds: Double
        /// The first miss, which meets the wide prefetch window (the later ones find it narrowed).
        public var firstMilliseconds: Double
        /// The issue's goal: 2 RTT + one average chunk's transfer time.
        public var goalMilliseconds: Double
    }

    public struct ProfileResult: Sendable, Codable {
        public var profile: Profile
        public var transport: String
        public var link: LinkAccuracyProbe.Result
        public var objects: Int
        public var compressedBytes: Int
        public var streamvmSeconds: Double
        public var streamvmGoodputMbit: Double
        /// Connections opened through the link: by streamvm's cold fetch and by curl.
        public var streamvmConnections: Int
        public var curlConnections: Int?
        public var curlSeconds: Double?
        public var curlGoodputMbit: Double?
        /// Why the curl baseline has no figure (curl < 8's h2c reuse bug makes `--parallel` fail).
        public var curlError: String?
        /// streamvm goodput ÷ curl goodput.
        public var curlRatio: Double?
        /// streamvm goodput ÷ measured link rate.
        public var linkFraction: Double
        public var measuredBandwidthMbit: Double?
        public var measuredRTTms: Double?
        public var demandMiss: DemandMiss
    }

    public struct Report: Sendable, Codable {
        public var libcurl: String
        /// Whether h2c requests each used a fresh connection (libcurl < 8.0 workaround).
        public var h2cConnectionPerRequest: Bool
        /// The prefetch window policy measured: open and pressured widths in bandwidth-delay products.
        public var openWindowInBDPs: Double
        public var pressuredWindowInBDPs: Double
        /// 1-minute load average of the host before and after the run (it is shared with other work).
        public var loadAverageBefore: Double?
        public var loadAverageAfter: Double?
        public var appliance: String
        public var artifactBytes: Int
        public var chunkSize: Int
        public var distinctChunks: Int
        public var cachedReads: CachedReads
        public var profiles: [ProfileResult]
    }

    public let origins: [Transport]
    /// CA bundle for the TLS transport's self-signed certificate.
    public let caFile: String?
    public let trust: SignedCatalog.Trust
    public let appliance: String
    public let workDirectory: String
    public let quick: Bool
    /// Open prefetch window in BDPs, to measure the trade-off (nil: the fetcher's default).
    public var openWindowInBDPs: Double?
    private let logger: Logger

    public init(origins: [Transport], caFile: String?, trust: SignedCatalog.Trust, appliance: String, workDirectory: String,
                quick: Bool, logger: Logger) {
        self.origins = origins
        self.caFile = caFile
        self.trust = trust
        self.appliance = appliance
        self.workDirectory = workDirectory
        self.quick = quick
        self.logger = logger
    }

    private struct Session {
        let client: CatalogClient
        let loader: ChunkRouter
        let manifest: Manifest
        func shutdown() { client.fetcher.shutdown() }
    }

    private func session(_ transport: Transport, port: UInt16, cacheDirectory: String?) async throws -> Session {
        var configuration = Fetcher.Configuration()
        configuration.caFile = caFile
        if let openWindowInBDPs { configuration.openWindowInBDPs = openWindowInBDPs }
        let fetcher = try Fetcher(configuration: configuration, logger: logger)
        let client = try CatalogClient(origins: [try Origin(transport.url(port: port))], trust: trust, fetcher: fetcher, logger: logger)
        let cache = try cacheDirectory.map { try ChunkCache(root: $0, capacityBytes: 1 << 40, logger: logger) }
        let (catalog, _) = try await client.loadCatalog()
        let (manifest, _) = try await client.loadManifest(try catalog.index.resolve(appliance).entry.manifest)
        return Session(client: client, loader: ChunkRouter(client: client, cache: cache), manifest: manifest)
    }

    public func run(profiles: [Profile]) async throws -> Report {
        let loadBefore = Self.loadAverage()
        try AtomicFile.makeDirectories(workDirectory)
        let cached = try await measureCachedReads()
        var results: [ProfileResult] = []
        for profile in profiles {
            let link = try LinkAccuracyProbe.measure(rateBitsPerSecond: profile.rateBitsPerSecond, rttSeconds: profile.rttSeconds,
                                                     bulkSeconds: quick ? 1 : 3)
            for transport in origins { results.append(try await measure(profile, link: link, transport: transport)) }
        }
        let probe = try await session(origins[0], port: origins[0].port, cacheDirectory: nil)
        defer { probe.shutdown() }
        let disk = try Self.disk(probe.manifest)
        let version = String(cString: curl_version())
        let defaults = Fetcher.Configuration()
        return Report(libcurl: version, h2cConnectionPerRequest: Fetcher.opensConnectionPerH2CRequest,
                      openWindowInBDPs: openWindowInBDPs ?? defaults.openWindowInBDPs, pressuredWindowInBDPs: defaults.pressuredWindowInBDPs,
                      loadAverageBefore: loadBefore, loadAverageAfter: Self.loadAverage(), appliance: appliance, artifactBytes: disk.size, chunkSize: probe.manifest.chunkSize,
                      distinctChunks: probe.manifest.distinctChunks.count, cachedReads: cached, profiles: results)
    }

    /// The 1-minute load average from /proc/loadavg, or nil where there is none.
    static func loadAverage() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return nil }
        return text.split(separator: " ").first.flatMap { Double($0) }
    }

    static func disk(_ manifest: Manifest) throws -> Artifact {
        guard let disk = manifest.artifact(.disk) else { throw ClientError.noArtifact("disk") }
        return disk
    }

    // MARK: cached reads

    private func measureCachedReads() async throws -> CachedReads {
        let cacheDirectory = "\(workDirectory)/cache-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: cacheDirectory) }
        let session = try await session(origins[0], port: origins[0].port, cacheDirectory: cacheDirectory)
        defer { session.shutdown() }
        let image = try await LazyImage.open(manifest: session.manifest, role: .disk, loader: session.loader)
        // Fill the cache.
        let step = 1 << 20
        var offset = 0
        while offset < image.size {
            _ = try await image.read(offset: offset, length: min(step, image.size - offset))
            offset += step
        }
        let readSize = 4096
        let reads = quick ? 5_000 : 50_000
        var latencies: [Double] = []
        latencies.reserveCapacity(reads)
        var generator = SystemRandomNumberGenerator()
        let blocks = image.size / readSize
        for _ in 0..<reads {
            let at = Int.random(in: 0..<max(1, blocks), using: &generator) * readSize
            let start = monotonicSeconds()
            _ = try await image.read(offset: at, length: min(readSize, image.size - at))
            latencies.append(monotonicSeconds() - start)
        }
        latencies.sort()
        // Sequential: whole-image passes in 1 MiB reads until enough bytes for a stable figure.
        let target = quick ? 256 << 20 : 2 << 30
        var total = 0
        let start = monotonicSeconds()
        while total < target {
            offset = 0
            while offset < image.size {
                let length = min(step, image.size - offset)
                _ = try await image.read(offset: offset, length: length)
                offset += length
                total += length
            }
        }
        let seconds = monotonicSeconds() - start
        return CachedReads(reads: reads, p50Microseconds: Self.percentile(latencies, 0.50) * 1e6,
                           p99Microseconds: Self.percentile(latencies, 0.99) * 1e6,
                           sequentialGBps: Double(total) / seconds / 1e9, sequentialBytes: total)
    }

    /// `Statistics.percentile` (index ⌊n·f⌋ of the sorted values; this file used ⌊(n−1)·f⌋ before,
    /// one rank lower at most), 0 for no samples.
    static func percentile(_ values: [Double], _ fraction: Double) -> Double {
        Statistics.percentile(values, fraction) ?? 0
    }

    // MARK: one link profile

    private func measure(_ profile: Profile, link: LinkAccuracyProbe.Result, transport: Transport) async throws -> ProfileResult {
        let proxy = try ShapingProxy(upstreamPort: transport.port, rateBitsPerSecond: profile.rateBitsPerSecond, rttSeconds: profile.rttSeconds)
        defer { proxy.stop() }

        // streamvm: every distinct chunk, fetched, decompressed and verified, no disk writes.
        let cold = try await session(transport, port: proxy.port, cacheDirectory: nil)
        var chunks: [(ref: ChunkRef, length: Int)] = []
        var seen = Set<ChunkID>()
        for artifact in cold.manifest.artifacts {
            for (index, ref) in artifact.chunks.enumerated() {
                if let ref, seen.insert(ref.id).inserted { chunks.append((ref, cold.manifest.chunkLength(artifact, index: index))) }
            }
        }
        if quick { chunks = Array(chunks.prefix(max(64, Int(profile.rateBitsPerSecond / 8 * 4) / max(1, averageStored(chunks))))) }
        let compressedBytes = chunks.reduce(0) { $0 + $1.ref.stored }
        let dictionaries = try await cold.client.loadDictionaries(for: cold.manifest)
        let ranked = chunks.enumerated().map { (rank: Double($0.offset), ref: $0.element.ref, length: $0.element.length) }
        let loader = cold.loader
        let start = monotonicSeconds()
        try await forEachConcurrently(ranked, limit: 1024) { item in
            _ = try await loader.load(item.ref, length: item.length, dictionary: item.ref.dict.map { dictionaries[$0] },
                                      priority: .prefetch(rank: item.rank))
        }
        let streamvmSeconds = monotonicSeconds() - start
        let estimate = cold.client.fetcher.linkEstimate
        cold.shutdown()
        let streamvmConnections = proxy.connectionsAccepted

        var curlSeconds: Double?
        var curlError: String?
        var curlConnections: Int?
        do {
            curlSeconds = try CurlBaseline.fetch(urls: chunks.map { "\(transport.url(port: proxy.port))/\(CatalogObject.chunk($0.ref.id).path)" },
                                                 tls: transport.tls, caFile: caFile, workDirectory: workDirectory)
            curlConnections = proxy.connectionsAccepted - streamvmConnections
        } catch {
            curlError = "\(error)"
        }
        let demand = try await measureDemandMisses(profile: profile, transport: transport, proxyPort: proxy.port)
        let goodput = Double(compressedBytes) * 8 / streamvmSeconds / 1e6
        let curlGoodput = curlSeconds.map { Double(compressedBytes) * 8 / $0 / 1e6 }
        return ProfileResult(profile: profile, transport: transport.name, link: link, objects: chunks.count, compressedBytes: compressedBytes,
                             streamvmSeconds: streamvmSeconds, streamvmGoodputMbit: goodput,
                             streamvmConnections: streamvmConnections, curlConnections: curlConnections, curlSeconds: curlSeconds, curlGoodputMbit: curlGoodput, curlError: curlError,
                             curlRatio: curlGoodput.map { goodput / $0 },
                             linkFraction: goodput / link.measuredRateMbit,
                             measuredBandwidthMbit: estimate.bandwidthBytesPerSecond.map { $0 * 8 / 1e6 },
                             measuredRTTms: estimate.rttSeconds.map { $0 * 1000 }, demandMiss: demand)
    }

    private func averageStored(_ chunks: [(ref: ChunkRef, length: Int)]) -> Int {
        chunks.isEmpty ? 1 : chunks.reduce(0) { $0 + $1.ref.stored } / chunks.count
    }

    /// Starts prefetching the whole disk in order, then reads chunks from its far end (which the
    /// prefetch reaches last) and times each read.
    private func measureDemandMisses(profile: Profile, transport: Transport, proxyPort: UInt16) async throws -> DemandMiss {
        let cacheDirectory = "\(workDirectory)/demand-cache-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: cacheDirectory) }
        let session = try await session(transport, port: proxyPort, cacheDirectory: cacheDirectory)
        defer { session.shutdown() }
        let image = try await LazyImage.open(manifest: session.manifest, role: .disk, loader: session.loader)
        let disk = try Self.disk(session.manifest)
        let indices = disk.chunks.indices.filter { disk.chunks[$0] != nil }
        for index in indices { image.prefetch(chunk: index, rank: Double(index)) }
        defer { for index in indices { image.cancelPrefetch(chunk: index) } }
        // Let the prefetch fill the pipe first.
        try await Task.sleep(nanoseconds: UInt64(max(0.5, profile.rttSeconds * 10) * 1e9))
        var latencies: [Double] = []
        var first: Double?
        var generator = SystemRandomNumberGenerator()
        let farHalf = Array(indices.suffix(max(1, indices.count / 2)))
        for _ in 0..<(quick ? 5 : 20) {
            guard let index = farHalf.filter({ !image.isLocal(chunk: $0) }).randomElement(using: &generator) else { break }
            let start = monotonicSeconds()
            _ = try await image.read(offset: index * image.chunkSize, length: min(4096, image.size - index * image.chunkSize))
            latencies.append(monotonicSeconds() - start)
            if first == nil { first = latencies.last }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        latencies.sort()
        let averageStored = Double(indices.reduce(0) { $0 + (disk.chunks[$1]?.stored ?? 0) }) / Double(max(1, indices.count))
        let goal = 2 * profile.rttSeconds + averageStored * 8 / profile.rateBitsPerSecond
        return DemandMiss(samples: latencies.count, p50Milliseconds: Self.percentile(latencies, 0.5) * 1000,
                          maxMilliseconds: (latencies.last ?? 0) * 1000, firstMilliseconds: (first ?? 0) * 1000,
                          goalMilliseconds: goal * 1000)
    }
}

/// `curl` fetching the same objects over the same link: HTTP/2 (prior knowledge on http://, ALPN on
/// https://), all URLs in parallel over one multiplexed connection, bodies discarded. Returns the wall time.
enum CurlBaseline {
    static func fetch(urls: [String], tls: Bool, caFile: String?, workDirectory: String) throws -> Double {
        let configPath = "\(workDirectory)/curl-urls-\(getpid()).txt"
        defer { unlink(configPath) }
        let config = urls.map { "url = \"\($0)\"\noutput = \"/dev/null\"\n" }.joined()
        try AtomicFile.write(Data(config.utf8), to: configPath)
        var arguments = ["--silent", "--show-error", "--no-progress-meter", "--fail", "--parallel", "--parallel-max", "100", "--config", configPath]
        arguments += tls ? ["--http2"] + (caFile.map { ["--cacert", $0] } ?? []) : ["--http2-prior-knowledge"]
        let start = monotonicSeconds()
        let (status, output) = try SpawnedProcess.run("/usr/bin/curl", arguments: arguments)
        guard status == 0 else {
            let message = output.split(separator: "\n").last { $0.hasPrefix("curl:") }.map(String.init) ?? ""
            throw ClientError.benchmark("curl baseline exited with \(status): \(message)")
        }
        return monotonicSeconds() - start
    }
}
