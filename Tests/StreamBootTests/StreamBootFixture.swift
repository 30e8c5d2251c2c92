import Catalog
import Foundation
import Hypervisor
import Logging
import StreamClient
import StreamServer
import TestSupport

/// The flat test guest published into a real catalogue and served by a real `CatalogServer` on a
/// loopback port: what `streamvm boot` streams from in these tests.
final class StreamBootFixture: @unchecked Sendable {
    static let repositoryRoot = TestGuestBuild.repositoryRoot

    /// Builds the guest once per test process (own output directory, so other suites' builds do not race it).
    static let guest: Result<String, any Error> = Result { try TestGuestBuild.build(into: "streamboot") }

    let base: String
    let catalog: CatalogDirectory
    let key = SigningKey()
    /// The server's trace upload token.
    let tokenFile: String
    let traceRoot: String
    private(set) var port = 0
    private var server: CatalogServer?
    private var serverTask: Task<Void, any Error>?
    let logger: Logger = {
        var logger = Logger(label: "streamboot.test")
        logger.logLevel = .critical
        return logger
    }()

    /// What the guest printed before it was snapshotted (snapshot appliances only).
    private(set) var snapshotChecksum: String?

    /// Publishes an appliance made of the test guest with `commandLine` and a `sectors`-sector
    /// patterned disk, at `chunkKiB` chunks.
    /// `patterned`: the disk `mode=blk` checks (it repeats every 256 sectors, so it dedups to few
    /// chunks); otherwise every 4 KiB block is distinct (half pseudo-random, half text).
    /// `snapshot`: boot the guest first and publish it paused at its ready marker (memory.img +
    /// vmstate.json, as `streamvm snapshot --at-ready`), so boots resume it; `sectors` 0: no disk.
    init(name: String, commandLine: String, sectors: Int, chunkKiB: Int = 4, patterned: Bool = true, snapshot: Bool = false,
         beforePublish: (String) throws -> Void = { _ in }) throws {
        let guestDirectory = try Self.guest.get()
        var template = Array("/tmp/streamvm-boottest-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CatalogError.io(path: "/tmp", errno: errno) }
        base = String(cString: made)
        let appliance = base + "/appliance"
        try FileManager.default.createDirectory(atPath: appliance, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: guestDirectory + "/testguest.bin", toPath: appliance + "/kernel")
        if sectors == 0 {
        } else if patterned {
            try Self.run(guestDirectory + "/mkdisk", [appliance + "/disk.img", String(sectors)])
        } else {
            try Data(Self.distinctBlocks(bytes: sectors * 512)).write(to: URL(fileURLWithPath: appliance + "/disk.img"))
        }
        let config = ApplianceConfig(name: name, version: "1", memoryMiB: 64, vcpus: 1, kernelCommandLine: commandLine,
                                     readyMarker: "STREAMVM-READY", kernelFormat: .flat)
        try JSONEncoder().encode(config).write(to: URL(fileURLWithPath: appliance + "/appliance.json"))
        if snapshot { snapshotChecksum = try Self.snapshot(appliance: appliance, config: config) }
        try beforePublish(appliance)
        catalog = try CatalogDirectory(root: base + "/catalog", create: true)
        var options = PublishOptions()
        options.chunkSize = chunkKiB << 10
        options.trainDictionary = false
        _ = try Publisher(catalog: catalog, key: key, options: options, logger: logger).publish(try ApplianceDirectory(path: appliance))
        tokenFile = base + "/token"
        try "boot-test-token-0123456789abcdef".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        traceRoot = base + "/traces"
    }

    deinit {
        if let server { Task { await server.shutdown() } }
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Boots the appliance with its disk (if any), pauses it at the ready marker and writes memory.img
    /// and vmstate.json beside it. Returns the checksum the guest printed before the marker.
    static func snapshot(appliance: String, config: ApplianceConfig) throws -> String {
        var disks: [any BlockBackend] = []
        if FileManager.default.fileExists(atPath: appliance + "/disk.img") { disks.append(try RawFileBackend(path: appliance + "/disk.img", readOnly: false)) }
        let configuration = MachineConfiguration(memorySize: config.memoryMiB << 20, vcpuCount: config.vcpus,
                                                 image: .flat(try Array(Data(contentsOf: URL(fileURLWithPath: appliance + "/kernel")))),
                                                 commandLine: config.kernelCommandLine ?? "", disks: disks, readyMarker: config.readyMarker,
                                                 pauseAtReady: true)
        let machine = try Machine(configuration: configuration, logger: Logger(label: "streamboot.snapshot"))
        let reason = machine.run(timeout: .seconds(120))
        guard reason == .stopRequested, machine.console.isReady else {
            throw HypervisorError.invalidConfiguration("snapshot guest did not pause at ready: \(reason); console: \(machine.console.output)")
        }
        try machine.saveSnapshot(to: appliance)
        let console = machine.console.output
        guard let range = console.range(of: "snapshot checksum ") else { return "" }
        return String(console[range.upperBound...].prefix(18))
    }

    static func distinctBlocks(bytes: Int) -> [UInt8] {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var data = [UInt8](repeating: 0, count: bytes)
        for offset in 0..<bytes {
            if offset % 4096 < 2048 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                data[offset] = UInt8(truncatingIfNeeded: state >> 56)
            } else {
                data[offset] = UInt8(ascii: "a") + UInt8(offset / 4096 % 26)
            }
        }
        return data
    }

    static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw HypervisorError.invalidConfiguration("\(tool) failed") }
    }

    /// Serves the published catalogue, or another catalogue directory (`root`, e.g. a mirror of it).
    func startServer(root: String? = nil) async throws {
        var options = CatalogServer.Options(catalog: root ?? catalog.root)
        options.port = 0
        options.scrubEnabled = false
        options.traceTokenFile = tokenFile
        options.traceDirectory = traceRoot
        let server = try CatalogServer(options: options, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        self.server = server
        serverTask = Task(executorPreference: DedicatedThreadsExecutor.shared) { try await server.run { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        self.port = port
    }

    func stopServer() async {
        await server?.shutdown()
        _ = try? await serverTask?.value
        serverTask = nil
        server = nil
    }

    /// Starts the server's shutdown without waiting for it to finish.
    func cancelServer() {
        if let server { Task { await server.shutdown() } }
        serverTask = nil
        server = nil
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// A client stack with its own (empty) cache directory.
    /// The stall limit is generous: a CI host busy with other suites' VMs has starved the in-process
    /// server for more than 5 s (the catalogue fetch of the diskless test, twice).
    func loader(cache: String, retry: RetryPolicy = RetryPolicy(), stallTimeout: Double = 30, origin: String? = nil,
                rollback: RollbackProtection? = nil) throws -> ChunkRouter {
        var configuration = Fetcher.Configuration()
        configuration.stallTimeoutSeconds = stallTimeout
        let fetcher = try Fetcher(configuration: configuration, logger: logger)
        let client = try CatalogClient(origins: [try Origin(origin ?? url)], trust: .key(key.publicKey), fetcher: fetcher, retry: retry,
                                       rollbackProtection: rollback, logger: logger)
        return ChunkRouter(client: client, cache: try ChunkCache(root: base + "/" + cache, capacityBytes: 1 << 30, logger: logger))
    }
}
