import Catalog
import Foundation
import Hypervisor
import Logging
import StreamBoot
import StreamClient
import StreamServer
import TestSupport
import Testing

/// Stream-boot of an appliance published as a paused VM: the test guest snapshotted at its ready
/// marker (`mode=snapshot`), served by a real `CatalogServer` on loopback, resumed by `streamvm
/// boot` with its RAM paged in over the network through userfaultfd as the guest touches it.
/// Nested in `StreamBootTests` so its `.serialized` covers both. Known server bug, not fixed here:
/// when a client aborts in-flight HTTP/2 transfers (a VM stopped with prefetches outstanding, a cut
/// link) and the test then stops its `CatalogServer`, the process sometimes aborts in swift-nio's
/// HTTP/2 stream set-up ("Deinited NIOAsyncWriter without calling finish()"); seen with tests of
/// both files running at once.
extension StreamBootTests {
@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: stream-resume tests skipped"),
       .timeLimit(.minutes(5)), .serialized)
struct StreamResumeTests {
    /// The snapshot guest's region: 8 MiB of patterned pages from 8 MiB (every 4th page zero).
    static let regionPages = ((8 << 20) / 4096)..<((16 << 20) / 4096)
    /// 64 KiB chunks: the region is memory chunks 128..<256.
    static let regionChunks = 128..<256

    static func snapshotFixture() throws -> StreamBootFixture {
        try StreamBootFixture(name: "resume", commandLine: "mode=snapshot mib=8", sectors: 64, chunkKiB: 64, snapshot: true)
    }

    /// The snapshot published consistently signed, but with memory.img changed after the snapshot:
    /// every chunk verifies, yet page 2049 (chunk 128, the region's first) no longer matches its
    /// digest in vmstate.json.
    static func fixtureWithPage2049Changed() throws -> StreamBootFixture {
        try StreamBootFixture(name: "resume", commandLine: "mode=snapshot mib=8", sectors: 64, chunkKiB: 64, snapshot: true) { appliance in
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: appliance + "/memory.img"))
            try handle.seek(toOffset: UInt64(2049 * 4096 + 8))
            try handle.write(contentsOf: Data([0xff]))
            try handle.close()
        }
    }

    func boot(_ fixture: StreamBootFixture, mode: PrefetchMode, cache: String,
              configure: (inout StreamBootSession.Options) -> Void = { _ in }) async throws -> StreamBootSession.Outcome {
        let loader = try fixture.loader(cache: cache, retry: RetryPolicy(attemptsPerOrigin: 2, backoffSeconds: [0.05]))
        defer { loader.client.fetcher.shutdown() }
        var options = StreamBootSession.Options(reference: "resume")
        options.prefetch = mode
        options.timeout = .seconds(120)
        configure(&options)
        return try await StreamBootSession(loader: loader, options: options, logger: fixture.logger).boot()
    }

    func memoryRecords(_ outcome: StreamBootSession.Outcome) -> [RunTrace.Record] {
        outcome.trace.records.filter { $0.location.role == .memory }
    }

    @Test func aStreamedSnapshotResumesLazilyWithEveryPageAsItWasSnapshotted() async throws {
        let fixture = try Self.snapshotFixture()
        let before = try #require(fixture.snapshotChecksum)
        try await fixture.startServer()
        let outcome = try await boot(fixture, mode: .none, cache: "cache")
        #expect(outcome.reason == .powerOff(code: 0), "\(outcome.console)")
        #expect(outcome.report.resumed)
        #expect(outcome.console.contains("resumed checksum \(before)"), "\(outcome.console)")
        #expect(outcome.console.contains("bad pages 0x0000000000000000"))
        #expect(outcome.report.readySeconds != nil, "the guest prints the ready marker again after resuming")
        // The guest ran before its memory was here: its first touches of the region were demand misses.
        let memory = memoryRecords(outcome)
        #expect(memory.contains { $0.outcome == .demandMiss })
        #expect(Set(Self.regionChunks).isSubset(of: Set(memory.map(\.location.index))))
        #expect(Set(memory.map(\.location)).count == memory.count, "each chunk's first touch is traced once")
        #expect(memory.allSatisfy { $0.guestSeconds != nil && $0.offset / (64 << 10) == $0.location.index })
        await fixture.stopServer()
    }

    @Test func concurrentFaultsOnOneChunkShareOneFetchAndZeroPagesNeedNone() async throws {
        let fixture = try Self.snapshotFixture()
        try await fixture.startServer()
        let loader = try fixture.loader(cache: "cache")
        defer { loader.client.fetcher.shutdown() }
        let (catalog, _) = try await loader.client.loadCatalog()
        let (manifest, _) = try await loader.client.loadManifest(try catalog.index.resolve("resume").entry.manifest)
        let recorder = TraceRecorder()
        let snapshot = try await MemorySnapshotAttachment.open(manifest: manifest, loader: loader, traceSink: recorder, readDeadlineSeconds: 5)
        let pages = snapshot.pages
        let fetchesBefore = loader.fetchesStarted
        let published = try Data(contentsOf: URL(fileURLWithPath: fixture.base + "/appliance/memory.img"))

        // Twelve threads fault on the twelve data pages of chunk 128 at once.
        let dataPages = (2048..<2064).filter { $0 % 4 != 3 }
        let gate = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        let results = Locked<[Int: Result<[UInt8], any Error>]>([:])
        for page in dataPages {
            group.enter()
            Thread.detachNewThread {
                gate.wait()
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                defer { buffer.deallocate() }
                let result = Result { () throws -> [UInt8] in
                    let content = try pages.readPage(page, into: buffer)
                    guard content == .data else { throw PageSourceError(page: page, problem: "expected data") }
                    return Array(buffer)
                }
                results.withLock { $0[page] = result }
                group.leave()
            }
        }
        for _ in dataPages { gate.signal() }
        _ = try await offPool { group.wait() }
        for page in dataPages {
            let bytes = try #require(try results.withLock { $0[page] }?.get())
            #expect(bytes == Array(published[(page * 4096)..<((page + 1) * 4096)]), "page \(page)")
        }
        #expect(loader.fetchesStarted - fetchesBefore == 1, "one fetch for the whole chunk")
        let traced = recorder.trace(appliance: "resume", version: "1", manifest: try catalog.index.resolve("resume").entry.manifest,
                                    prefetch: .none, model: nil).records
        #expect(traced.count == 1)
        #expect(traced.first?.location == ChunkLocation(role: .memory, index: 128))
        #expect(traced.first?.outcome == .demandMiss)

        // Zero pages, inside a data chunk or in an all-zero chunk, load nothing.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { buffer.deallocate() }
        #expect(try pages.readPage(2051, into: buffer) == .zero)
        #expect(try pages.readPage(10_000, into: buffer) == .zero)
        #expect(loader.fetchesStarted - fetchesBefore == 1)
        await fixture.stopServer()
    }

    @Test func prefetchedMemoryIsPushedToTheInstallerWhenItArrives() async throws {
        let fixture = try Self.snapshotFixture()
        try await fixture.startServer()
        let loader = try fixture.loader(cache: "cache-push")
        defer { loader.client.fetcher.shutdown() }
        let (catalog, _) = try await loader.client.loadCatalog()
        let (manifest, _) = try await loader.client.loadManifest(try catalog.index.resolve("resume").entry.manifest)
        let snapshot = try await MemorySnapshotAttachment.open(manifest: manifest, loader: loader, traceSink: nil, readDeadlineSeconds: 5)
        let installer = MemoryPageInstaller(pages: snapshot.pages, traceInstalls: false)
        defer { installer.stop() }
        #expect(!snapshot.memory.isLocal(chunk: 130))
        installer.notePrefetched(chunk: 130)
        #expect(installer.chunksReadyToInstall.isEmpty)
        // The install thread is not running and nothing polls: only the router's notice that the
        // chunk arrived can make it ready.
        snapshot.memory.prefetch(chunk: 130, rank: 0)
        let deadline = ContinuousClock.now + .seconds(20)
        while installer.chunksReadyToInstall.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(installer.chunksReadyToInstall == [130])
        #expect(snapshot.memory.isLocal(chunk: 130))
        // A chunk that is already local when the prefetcher names it is ready at once.
        _ = try await snapshot.memory.read(offset: 131 * (64 << 10), length: 1)
        installer.notePrefetched(chunk: 131)
        #expect(installer.chunksReadyToInstall == [130, 131])
        await fixture.stopServer()
    }

    @Test func aCorruptedMemoryChunkFromTheServerStopsTheVMWithAClearError() async throws {
        let fixture = try Self.snapshotFixture()
        // The server's copy of memory chunk 130 now decompresses to other bytes.
        let manifest = try fixture.catalog.loadManifest(try fixture.catalog.loadCatalog(trust: .insecure)!.index.resolve("resume").entry.manifest)
        let ref = try #require(manifest.artifact(.memory)?.chunks[130])
        let path = fixture.catalog.filePath(.chunk(ref.id))
        try Data(try ZstdCompressor().compress([UInt8](repeating: 0x55, count: 64 << 10))).write(to: URL(fileURLWithPath: path))
        try await fixture.startServer()
        let outcome = try await boot(fixture, mode: .none, cache: "cache") { $0.readDeadlineSeconds = 1 }
        guard case .failure(let message) = outcome.reason else {
            Issue.record("expected the VM to stop with a failure, got \(outcome.reason): \(outcome.console)")
            await fixture.stopServer()
            return
        }
        #expect(message.contains("guest memory unavailable"), "\(message)")
        #expect(message.contains("memory chunk 130"), "\(message)")
        #expect(!outcome.console.contains("resumed checksum"), "the guest never ran on a wrong page: \(outcome.console)")
        #expect(outcome.report.readySeconds == nil)
        await fixture.stopServer()
    }

    @Test func aMemoryImageThatDoesNotMatchItsStateIsRefusedPageByPage() async throws {
        // Page 2049 no longer matches vmstate.json. It is in the region's first chunk, so no readahead
        // is in flight when the VM stops.
        let fixture = try Self.fixtureWithPage2049Changed()
        try await fixture.startServer()
        let outcome = try await boot(fixture, mode: .none, cache: "cache")
        guard case .failure(let message) = outcome.reason else {
            Issue.record("expected the VM to stop with a failure, got \(outcome.reason): \(outcome.console)")
            await fixture.stopServer()
            return
        }
        #expect(message.contains("guest page 2049") && message.contains("does not match vmstate.json"), "\(message)")
        #expect(!outcome.console.contains("resumed checksum"))
        await fixture.stopServer()
    }

    @Test func prefetchedMemoryIsInstalledBeforeTheGuestTouchesItSoItFaultsFarLess() async throws {
        let fixture = try Self.snapshotFixture()
        let before = try #require(fixture.snapshotChecksum)
        try await fixture.startServer()
        let lazy = try await boot(fixture, mode: .none, cache: "cache-none")
        #expect(lazy.reason == .powerOff(code: 0), "\(lazy.console)")
        #expect(lazy.report.memoryPagesInstalled == nil, "a training run installs nothing ahead")
        let lazyFaults = try #require(lazy.report.memoryPageFaults)
        #expect(lazyFaults >= Self.regionPages.count, "\(lazyFaults) faults: one per page touched")
        // With fault-around: one fault per chunk of the region at least, the rest of each chunk mapped with it.
        let around = try await boot(fixture, mode: .none, cache: "cache-around") { $0.faultAround = true }
        #expect(around.reason == .powerOff(code: 0), "\(around.console)")
        #expect(around.console.contains("resumed checksum \(before)") && around.console.contains("bad pages 0x0000000000000000"))
        let aroundFaults = try #require(around.report.memoryPageFaults)
        #expect(aroundFaults >= Self.regionChunks.count && aroundFaults < Self.regionPages.count / 4, "\(aroundFaults) faults")

        let full = try await boot(fixture, mode: .full, cache: "cache-full") { $0.installAhead = true }
        #expect(full.reason == .powerOff(code: 0), "\(full.console)")
        #expect(full.console.contains("resumed checksum \(before)"), "\(full.console)")
        #expect(full.console.contains("bad pages 0x0000000000000000"))
        let installed = try #require(full.report.memoryPagesInstalled)
        let fullFaults = try #require(full.report.memoryPageFaults)
        #expect(installed >= Self.regionPages.count, "every page of the local region chunks went in before the start")
        #expect(fullFaults * 10 < lazyFaults, "\(fullFaults) faults with pages installed, \(lazyFaults) without")
        // Installs are not first touches in a `full` run: no model chose those chunks.
        #expect(!memoryRecords(full).contains { Self.regionChunks.contains($0.location.index) })
        await fixture.stopServer()
    }

    @Test func aPageThatDoesNotMatchItsDigestIsNeverInstalledAhead() async throws {
        // Every chunk verifies (published after the change), so `full` has them all local and installs
        // them before the start; page 2049 no longer matches vmstate.json, so the install refuses it
        // and the guest never runs. (A chunk failing its SHA-256 never becomes local, so it is never
        // installed; aCorruptedMemoryChunkFromTheServer… covers its demand path.)
        let fixture = try Self.fixtureWithPage2049Changed()
        try await fixture.startServer()
        do {
            let outcome = try await boot(fixture, mode: .full, cache: "cache") { $0.installAhead = true }
            Issue.record("expected the resume to be refused, got \(outcome.reason): \(outcome.console)")
        } catch {
            #expect("\(error)".contains("guest page 2049") && "\(error)".contains("does not match vmstate.json"), "\(error)")
        }
        await fixture.stopServer()
    }

    @Test func memoryTracesTrainAModelThatPrefetchesPagesOnTheNextResume() async throws {
        let fixture = try Self.snapshotFixture()
        try await fixture.startServer()
        let first = try await boot(fixture, mode: .none, cache: "cache-none")
        #expect(first.reason == .powerOff(code: 0), "\(first.console)")
        let misses = memoryRecords(first).filter { $0.outcome == .demandMiss }.count
        #expect(misses > 3, "sequential readahead covers most of the walk, not its start")

        let uploader = try TraceUploader(origin: try Origin(fixture.url), tokenFile: fixture.tokenFile)
        let trace = first.trace
        _ = try await offPool { try uploader.upload(trace) }
        let report = try ModelPublisher(catalog: fixture.catalog, key: fixture.key, traceRoot: fixture.traceRoot, logger: fixture.logger)
            .learn(appliance: "resume")
        #expect(report.runs == 1 && report.published)

        for mode in [PrefetchMode.vtube, .workingset] {
            let second = try await boot(fixture, mode: mode, cache: "cache-\(mode.rawValue)") { $0.installAhead = true }
            #expect(second.reason == .powerOff(code: 0), "\(mode): \(second.console)")
            #expect(second.console.contains("bad pages 0x0000000000000000"))
            #expect(second.report.model == report.model.hex)
            let memory = memoryRecords(second)
            let hits = memory.filter { $0.outcome == .prefetchHit }.count
            let secondMisses = memory.filter { $0.outcome == .demandMiss }.count
            #expect(hits > 0, "\(mode): \(second.report)")
            #expect(secondMisses < misses, "\(mode): \(secondMisses) page misses with the model, \(misses) without")
            if mode == .workingset { #expect(secondMisses == 0) }
            // The model's chunks went into guest RAM ahead of the guest, and are still traced as touched.
            #expect((second.report.memoryPagesInstalled ?? 0) > 0, "\(mode): \(second.report)")
            #expect((second.report.memoryPageFaults ?? .max) < (first.report.memoryPageFaults ?? 0), "\(mode)")
        }
        await fixture.stopServer()
    }
}
}
