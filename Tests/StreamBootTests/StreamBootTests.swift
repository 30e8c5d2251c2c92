import Benchmarks
import Catalog
import Foundation
import Hypervisor
import Logging
import StreamBoot
import StreamClient
import StreamServer
import Synchronization
import TestSupport
import Testing

/// End to end on this host: the flat test guest published, served by `CatalogServer` on loopback,
/// stream-booted through `LazyImage` on virtio-blk with each prefetch mode; traces go back to the
/// server, the learner publishes a model, and the next boot prefetches with it.
@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: stream-boot tests skipped"),
       .timeLimit(.minutes(5)), .serialized, .offCooperativePool)
struct StreamBootTests {
    /// Boots `fixture`'s appliance once with a fresh cache.
    func boot(_ fixture: StreamBootFixture, mode: PrefetchMode, cache: String, origin: String? = nil,
              onMachine: @escaping @Sendable (Machine) -> Void = { _ in },
              configure: (inout StreamBootSession.Options) -> Void = { _ in },
              beforeRun: @escaping @Sendable (Machine, StreamBootSession.Live) async throws -> Void = { _, _ in }) async throws -> StreamBootSession.Outcome {
        let loader = try fixture.loader(cache: cache, retry: RetryPolicy(attemptsPerOrigin: 2, backoffSeconds: [0.05]), origin: origin)
        defer { loader.client.fetcher.shutdown() }
        var options = StreamBootSession.Options(reference: try fixture.catalog.loadCatalog(trust: .insecure)!.index.appliances.keys.sorted().first!)
        options.prefetch = mode
        options.timeout = .seconds(120)
        configure(&options)
        return try await StreamBootSession(loader: loader, options: options, logger: fixture.logger).boot(onMachine: onMachine, beforeRun: beforeRun)
    }

    /// `beforeRun` (where `boot --api-socket` starts the control API) sees the machine before it
    /// runs and live counters that grow as the guest streams; throwing there keeps the guest from running.
    @Test func beforeRunSeesLiveCountersAndCanKeepTheGuestFromRunning() async throws {
        let fixture = try StreamBootFixture(name: "live", commandLine: "mode=blk", sectors: 2048)
        try await fixture.startServer()
        let seen = LiveBox()
        let outcome = try await boot(fixture, mode: .none, cache: "cache-live", beforeRun: { machine, live in
            #expect(machine.state == .notStarted)
            seen.live = live
        })
        #expect(outcome.reason == .powerOff(code: 0))
        let counters = try #require(seen.live).counters()
        #expect(seen.live?.appliance == "live")
        #expect(counters.firstTouches == outcome.trace.records.count)
        #expect(counters.bytesReceived > 0)

        struct Refused: Error {}
        let started = LiveBox()
        await #expect(throws: Refused.self) {
            _ = try await boot(fixture, mode: .none, cache: "cache-refused", onMachine: { _ in }, beforeRun: { machine, _ in
                started.machine = machine
                throw Refused()
            })
        }
        #expect(started.machine?.state == .notStarted, "the guest never ran")
        await fixture.stopServer()
    }

    /// `onProgress` (the CLI's terminal line) hears buffering, then the start, then ready, each
    /// with figures that add up: a full-mode boot buffers the whole disk before the guest starts,
    /// and a second boot on the same cache finds every chunk local.
    @Test func progressComesInOrderWithFiguresThatAddUp() async throws {
        let fixture = try StreamBootFixture(name: "progress", commandLine: "mode=blk", sectors: 2048)
        try await fixture.startServer()
        let events = Mutex<[(StreamBootSession.Milestone, StreamBootSession.Live.Counters)]>([])
        let configure: (inout StreamBootSession.Options) -> Void = { options in
            options.progressInterval = .milliseconds(20)
            options.onProgress = { milestone, counters in events.withLock { $0.append((milestone, counters)) } }
        }
        let outcome = try await boot(fixture, mode: .full, cache: "cache-progress", configure: configure)
        #expect(outcome.reason == .powerOff(code: 0), "\(outcome.console)")
        let seen = events.withLock { $0 }
        let order = seen.map(\.0).reduce(into: [StreamBootSession.Milestone]()) { if $0.last != $1 { $0.append($1) } }
        #expect(order == [.buffering, .guestStarted, .ready], "\(order)")
        let manifest = try DisklessApplianceTests.publishedManifest(fixture, reference: "progress").manifest
        // Identical chunks are fetched once: the figures count distinct chunks.
        let disk = Set(try #require(manifest.artifact(.disk)).chunks.compactMap { $0 })
        let diskBytes = disk.reduce(0) { $0 + $1.stored }
        let imageBytes = disk.union(try #require(manifest.artifact(.kernel)).chunks.compactMap { $0 }).reduce(0) { $0 + $1.stored }
        if let started = seen.first(where: { $0.0 == .guestStarted })?.1, let ready = seen.first(where: { $0.0 == .ready })?.1 {
            #expect(started.imageBytes == imageBytes)
            #expect(started.bufferTargetBytes > 0 && started.bufferedBytes >= started.bufferTargetBytes, "full buffers everything first")
            #expect(started.startSeconds != nil && ready.readySeconds != nil)
            #expect((ready.readySeconds ?? 0) >= (started.startSeconds ?? .infinity))
            #expect(started.cachedChunks == 0, "a fresh cache")
        }
        #expect(outcome.counters.bytesReceived >= diskBytes, "the whole disk came over the wire")

        let again = try await boot(fixture, mode: .full, cache: "cache-progress")
        #expect(again.counters.cachedBytes == diskBytes && again.counters.cachedChunks == disk.count, "every disk chunk was in the cache")
        await fixture.stopServer()
    }

    @Test func blkGuestReadsAndWritesItsStreamedDisk() async throws {
        let fixture = try StreamBootFixture(name: "blkguest", commandLine: "mode=blk", sectors: 2048)
        try await fixture.startServer()
        for mode in PrefetchMode.allCases {
            let outcome = try await boot(fixture, mode: mode, cache: "cache-\(mode.rawValue)")
            #expect(outcome.reason == .powerOff(code: 0), "\(mode): \(outcome.console)")
            #expect(outcome.console.contains("STREAMVM-READY"))
            #expect(outcome.report.readySeconds != nil)
            // The guest read sector 0 and the last sector; the write went to the overlay.
            let touched = Set(outcome.trace.records.map(\.location.index))
            #expect(touched.contains(0) && touched.contains(255), "\(mode): \(touched.sorted())")
        }
        await fixture.stopServer()
    }

    @Test func tracesTrainAModelThatTheNextBootPrefetchesWith() async throws {
        // 4 MiB disk at 4 KiB chunks; the guest reads 96 pseudo-random 4 KiB blocks, then 1 MiB sequentially.
        let fixture = try StreamBootFixture(name: "replay", commandLine: "mode=blkbench count=96 seqmib=1", sectors: 8192, patterned: false)
        try await fixture.startServer()
        let first = try await boot(fixture, mode: .none, cache: "cache-none")
        #expect(first.reason == .powerOff(code: 0), "\(first.console)")
        let misses = first.trace.records.filter { $0.outcome == .demandMiss }.count
        #expect(misses > 50)
        #expect(first.trace.records.allSatisfy { $0.guestSeconds != nil })

        // Upload the trace as the CLI does, then learn from it.
        let uploader = try TraceUploader(origin: try Origin(fixture.url), tokenFile: fixture.tokenFile)
        let trace = first.trace
        _ = try await offPool { try uploader.upload(trace) }
        let report = try ModelPublisher(catalog: fixture.catalog, key: fixture.key, traceRoot: fixture.traceRoot, logger: fixture.logger)
            .learn(appliance: "replay")
        #expect(report.runs == 1 && report.published)

        for mode in [PrefetchMode.vtube, .workingset] {
            let second = try await boot(fixture, mode: mode, cache: "cache-\(mode.rawValue)")
            #expect(second.reason == .powerOff(code: 0), "\(mode): \(second.console)")
            #expect(second.report.model == report.model.hex)
            let hits = second.trace.records.filter { $0.outcome == .prefetchHit }.count
            let secondMisses = second.trace.records.filter { $0.outcome == .demandMiss }.count
            #expect(hits > 0, "\(mode): \(second.report)")
            #expect(secondMisses < misses, "\(mode): \(secondMisses) misses with the model, \(misses) without")
            if mode == .workingset {
                // REAP: the whole recorded working set is local before the guest runs.
                #expect(secondMisses == 0)
            }
        }
        await fixture.stopServer()
    }

    @Test func aMemorySnapshotWithoutItsStateIsRefusedWithAClearError() async throws {
        let fixture = try StreamBootFixture(name: "blkguest", commandLine: "mode=hello", sectors: 64)
        // Republish with a memory.img but no vmstate.json beside the disk.
        let appliance = fixture.base + "/appliance"
        try Data(repeating: 7, count: 8192).write(to: URL(fileURLWithPath: appliance + "/memory.img"))
        var config = try JSONDecoder().decode(ApplianceConfig.self, from: Data(contentsOf: URL(fileURLWithPath: appliance + "/appliance.json")))
        config.version = "2"
        try JSONEncoder().encode(config).write(to: URL(fileURLWithPath: appliance + "/appliance.json"))
        var options = PublishOptions()
        options.trainDictionary = false
        _ = try Publisher(catalog: fixture.catalog, key: fixture.key, options: options, logger: fixture.logger).publish(try ApplianceDirectory(path: appliance))
        try await fixture.startServer()
        let error = await #expect(throws: StreamBootError.self) {
            _ = try await boot(fixture, mode: .vtube, cache: "cache", configure: { $0.reference = "blkguest@2" })
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("no vmstate.json"))
        await fixture.stopServer()
    }

    /// `boot` remembers the newest catalogue generation it accepted on this host: the origin going
    /// back to an older catalog.json (a restored backup, a stale replica) is refused before anything runs.
    @Test func bootRefusesACatalogueOlderThanOneThisHostAccepted() async throws {
        let fixture = try StreamBootFixture(name: "blkguest", commandLine: "mode=hello", sectors: 64)
        let generationOne = try fixture.catalog.read(.catalog)
        // Version 2 makes generation 2.
        let appliance = fixture.base + "/appliance"
        var config = try JSONDecoder().decode(ApplianceConfig.self, from: Data(contentsOf: URL(fileURLWithPath: appliance + "/appliance.json")))
        config.version = "2"
        try JSONEncoder().encode(config).write(to: URL(fileURLWithPath: appliance + "/appliance.json"))
        var publish = PublishOptions()
        publish.trainDictionary = false
        _ = try Publisher(catalog: fixture.catalog, key: fixture.key, options: publish, logger: fixture.logger).publish(try ApplianceDirectory(path: appliance))
        try await fixture.startServer()
        let seen = SeenGenerations(directory: fixture.base + "/state")
        func bootProtected(cache: String) async throws -> StreamBootSession.Outcome {
            let loader = try fixture.loader(cache: cache, rollback: RollbackProtection(seen: seen))
            defer { loader.client.fetcher.shutdown() }
            var options = StreamBootSession.Options(reference: "blkguest@1")
            options.timeout = .seconds(120)
            return try await StreamBootSession(loader: loader, options: options, logger: fixture.logger).boot()
        }
        let first = try await bootProtected(cache: "cache-1")
        #expect(first.reason == .powerOff(code: 0), "\(first.console)")
        #expect(try seen.highest(for: fixture.key.publicKey) == 2)

        try fixture.catalog.repair(.catalog, data: generationOne)
        do {
            let outcome = try await bootProtected(cache: "cache-2")
            Issue.record("generation 1 was booted after generation 2: \(outcome.reason)")
        } catch {
            #expect("\(error)".contains("generation 1, older than generation 2"), "\(error)")
        }
        await fixture.stopServer()
    }

    @Test func aLinkThatStaysDownEndsTheRunWithAClearErrorAfterTheDeadline() async throws {
        let fixture = try StreamBootFixture(name: "blkguest", commandLine: "mode=blk", sectors: 2048)
        try await fixture.startServer()
        // The link: a proxy in front of the server, cut (listener and connections) as the guest starts.
        let link = try ShapingProxy(upstreamPort: UInt16(fixture.port), rateBitsPerSecond: 1e9, rttSeconds: 0.001)
        let started = ContinuousClock.now
        let outcome = try await boot(fixture, mode: .none, cache: "cache", origin: link.url, onMachine: { _ in link.stop() }) {
            $0.readDeadlineSeconds = 2
        }
        let elapsed = ContinuousClock.now - started
        guard case .failure(let message) = outcome.reason else {
            Issue.record("expected a failure, the run ended with \(outcome.reason)")
            return
        }
        #expect(message.contains("the disk stopped answering"), "\(message)")
        #expect(elapsed >= .seconds(2))
        #expect(!outcome.console.contains("STREAMVM-READY"))
        await fixture.stopServer()
    }

    @Test func aLinkThatDropsMidBootStallsTheGuestAndResumesWithCorrectBytes() async throws {
        let fixture = try StreamBootFixture(name: "blkguest", commandLine: "mode=blk", sectors: 2048)
        try await fixture.startServer()
        let link = try SwitchableLink(upstreamPort: UInt16(fixture.port))
        defer { link.stop() }
        let started = ContinuousClock.now
        // The link goes down as the guest starts and comes back 1.5 s later.
        let outcome = try await boot(fixture, mode: .none, cache: "cache", origin: link.url, onMachine: { _ in
            link.cut()
            DispatchQueue.global().asyncAfter(deadline: .now() + 1.5) { link.restore() }
        }) { $0.readDeadlineSeconds = 30 }
        #expect(outcome.reason == .powerOff(code: 0), "\(outcome.console)")
        // The guest checks every byte it reads against the published pattern.
        #expect(outcome.console.contains("ok   sectors 0-7 hold the host's pattern"))
        #expect(outcome.console.contains("ok   last sector holds the host's pattern"))
        #expect(!outcome.console.contains("FAIL"))
        #expect(ContinuousClock.now - started >= .seconds(1.5))
        link.stop()
        // Not awaited: after a cut link the server's graceful shutdown waits about 29 s for a
        // connection to close (noted for the server's owner); cancelling is enough to end it.
        fixture.cancelServer()
    }
}

private final class LiveBox: @unchecked Sendable {
    var live: StreamBootSession.Live?
    var machine: Machine?
}
