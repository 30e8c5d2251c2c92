import Catalog
import Foundation
import Testing
@testable import StreamClient

@Suite struct PrefetchSchedulerTests {
    typealias Scheduler = PrefetchScheduler<ManualClock>
    static let chunkBytes = 64 << 10

    static func disk(_ index: Int) -> ChunkLocation { ChunkLocation(role: .disk, index: index) }

    /// 100 disk chunks of 64 KiB each; every tenth is all zero.
    static let chunks = StreamedChunks(stored: [.disk: (0..<100).map { $0 % 10 == 9 ? nil : chunkBytes }])

    /// Clusters: boot 0-7 at t=0, A 20-27 at t=4 (after boot, 70%), B 40-47 at t=4 (30%).
    static func model() -> AccessModel {
        func cluster(_ range: Range<Int>, start: Double, support: Double, next: [AccessModel.Transition]) -> AccessModel.Cluster {
            .init(chunks: range.map(disk), bytes: range.count * chunkBytes, support: support, startSeconds: start, next: next)
        }
        return AccessModel(appliance: "app", version: "1", manifest: Digest.of(Data()), runs: 10, start: [.init(to: 0, probability: 1)],
                           clusters: [
                               cluster(0..<8, start: 0, support: 1, next: [.init(to: 1, probability: 0.7), .init(to: 2, probability: 0.3)]),
                               cluster(20..<28, start: 4, support: 0.7, next: []),
                               cluster(40..<48, start: 4, support: 0.3, next: []),
                           ])
    }

    /// The predicted path boot → A in expected bytes: boot (support 1) whole, A (support 0.7) at 70 %.
    static let expectedPathBytes = 8 * chunkBytes + Int((0.7 * Double(8 * chunkBytes)).rounded(.up))

    static func scheduler(_ mode: PrefetchMode, model: AccessModel? = PrefetchSchedulerTests.model(), clock: ManualClock,
                          configure: (inout Scheduler.Configuration) -> Void = { _ in }) -> Scheduler {
        var configuration = Scheduler.Configuration(mode: mode)
        configure(&configuration)
        return Scheduler(configuration: configuration, chunks: chunks, model: model, local: [], clock: clock)
    }

    static func fetches(_ actions: [Scheduler.Action]) -> [ChunkLocation] {
        actions.compactMap { if case .fetch(let location, _) = $0 { return location } else { return nil } }
    }

    static func startsGuest(_ actions: [Scheduler.Action]) -> Bool {
        actions.contains { if case .startGuest = $0 { return true } else { return false } }
    }

    /// Completes every fetch in `actions` (and those they trigger) until `stop` says enough.
    static func complete(_ scheduler: inout Scheduler, _ actions: [Scheduler.Action], until stop: ([Scheduler.Action]) -> Bool = { _ in false }) -> [Scheduler.Action] {
        var pending = fetches(actions)
        var seen: [Scheduler.Action] = actions
        while !pending.isEmpty, !stop(seen) {
            let next = scheduler.fetched(pending.removeFirst())
            seen += next
            pending += fetches(next)
        }
        return seen
    }

    @Test func noneStartsAtOnceAndReadsAheadAfterAMiss() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.none, model: nil, clock: clock)
        let start = scheduler.start()
        #expect(start == [.startGuest(bufferedBytes: 0)])
        // Random misses read nothing extra.
        for index in [50, 70, 5] { #expect(Self.fetches(scheduler.accessed(Self.disk(index), waited: true)).isEmpty) }
        // A sequential miss (6 right after 5) reads ahead 8 fetchable chunks, skipping the zero chunk 9.
        let ahead = Self.fetches(scheduler.accessed(Self.disk(6), waited: true))
        #expect(ahead == [7, 8, 10, 11, 12, 13, 14, 15].map(Self.disk))
        // The reader consuming the window (a hit, no wait) keeps it 8 chunks ahead.
        _ = scheduler.fetched(Self.disk(7))
        #expect(Self.fetches(scheduler.accessed(Self.disk(7), waited: false)) == [Self.disk(16)])
        // Without --complete nothing else is streamed.
        #expect(Self.fetches(scheduler.accessed(Self.disk(90), waited: false)).isEmpty)
    }

    @Test func fullWaitsForTheWholeImageAndKeepsOutstandingBytesBounded() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.full, clock: clock)
        let first = scheduler.start()
        #expect(!Self.startsGuest(first))
        // Before measurements the window is the minimum (2 MiB = 32 chunks).
        #expect(Self.fetches(first).count == (2 << 20) / Self.chunkBytes)
        let all = Self.complete(&scheduler, first)
        #expect(Self.startsGuest(all))
        #expect(Set(Self.fetches(all)) == Set(Self.chunks.allFetchable))
        #expect(scheduler.isIdle)
    }

    @Test func workingSetStreamsTheRecordedChunksInOrderBeforeStarting() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.workingset, clock: clock)
        let first = scheduler.start()
        #expect(!Self.startsGuest(first))
        // Clusters by start time: boot, then A and B (both at 4 s), 24 chunks in all.
        #expect(Self.fetches(first) == (Array(0..<8) + Array(20..<28) + Array(40..<48)).map(Self.disk))
        let all = Self.complete(&scheduler, first)
        #expect(Self.startsGuest(all))
        #expect(Self.fetches(all).count == 24)
    }

    @Test func vtubeBufferSizeFollowsTheMeasuredBandwidth() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.vtube, clock: clock)
        _ = scheduler.start()
        // Predicted path boot → A (B is less likely). Boot is needed at once, so it is buffered; at
        // the assumed 256 KiB/s the 4 s until A bring 1 MiB, which covers A.
        #expect(scheduler.bufferTargetBytes == 8 * Self.chunkBytes)
        // A fast link: boot plus one round trip of data.
        _ = scheduler.tick(bandwidthBytesPerSecond: 10e6, rttSeconds: 0.02)
        #expect(scheduler.bufferTargetBytes == 8 * Self.chunkBytes + Int((10e6 * 0.02).rounded(.up)))
        // A very slow link brings only 4 KB before A is needed: nearly the whole path is buffered,
        // A at its support (70 % of the training runs touched it).
        _ = scheduler.tick(bandwidthBytesPerSecond: 1000, rttSeconds: 0.02)
        #expect(scheduler.bufferTargetBytes == Int((Double(Self.expectedPathBytes) - 1000 * 4 + 1000 * 0.02).rounded(.up)))
    }

    @Test func vtubeBufferIsSizedWithTheGoodputPrefetchesGetWhenItIsLower() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.vtube, clock: clock)
        _ = scheduler.start()
        _ = scheduler.tick(bandwidthBytesPerSecond: 10e6, rttSeconds: 0)
        #expect(scheduler.bufferTargetBytes == 8 * Self.chunkBytes)
        // One chunk (64 KiB) arrives in one second: 64 KiB/s actually delivered, far below the
        // estimate, so A (needed 4 s in) cannot stream in time and is buffered too (minus 4 s of it).
        clock.advance(by: .seconds(1))
        _ = scheduler.fetched(Self.disk(0))
        #expect(scheduler.bufferTargetBytes == Self.expectedPathBytes - 4 * Self.chunkBytes)
    }

    @Test func vtubeStartsOnceTheBufferIsFilledAndStreamsThePredictedPathFirst() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.vtube, clock: clock)
        var actions = scheduler.start() + scheduler.tick(bandwidthBytesPerSecond: 10e6, rttSeconds: 0.001)
        // Boot, then A (likely), then B (the rest of the working set): path order.
        #expect(Array(Self.fetches(actions).prefix(24)) == (Array(0..<8) + Array(20..<28) + Array(40..<48)).map(Self.disk))
        #expect(!Self.startsGuest(actions))
        actions = Self.complete(&scheduler, actions, until: Self.startsGuest)
        #expect(Self.startsGuest(actions))
        #expect(scheduler.bufferedStartupBytes < 16 * Self.chunkBytes)
    }

    @Test func vtubeBuffersForAfterReadyClustersWithTheWholePathBuffer() {
        // A (on the predicted path) is only touched after the ready marker; the session still needs
        // it 4 s in, so on a very slow link the whole-path buffer takes it as if needed before ready.
        var model = Self.model()
        model.clusters[1].afterReady = true
        var scheduler = Self.scheduler(.vtube, model: model, clock: ManualClock()) { $0.startupBuffer = .path }
        _ = scheduler.start()
        _ = scheduler.tick(bandwidthBytesPerSecond: 1000, rttSeconds: 0.02)
        #expect(scheduler.bufferTargetBytes == Int((Double(Self.expectedPathBytes) - 1000 * 4 + 1000 * 0.02).rounded(.up)))
        // A link that brings A in the 4 s before it is needed: boot and a round trip only.
        _ = scheduler.tick(bandwidthBytesPerSecond: 10e6, rttSeconds: 0.02)
        #expect(scheduler.bufferTargetBytes == 8 * Self.chunkBytes + Int((10e6 * 0.02).rounded(.up)))
    }

    @Test func vtubeBuffersOnlyForReadyByDefaultAndStreamsAfterReadyClustersOnceTheGuestRuns() {
        // The same model, but A (on the predicted path) is only touched after the ready marker.
        var model = Self.model()
        model.clusters[1].afterReady = true
        let clock = ManualClock()
        var scheduler = Self.scheduler(.vtube, model: model, clock: clock)
        var actions = scheduler.start() + scheduler.tick(bandwidthBytesPerSecond: 1000, rttSeconds: 0.02)
        // A very slow link: without the mark nearly boot + A would be buffered (see above); with it,
        // boot only (the target is capped at the bytes the buffer can hold).
        #expect(scheduler.bufferTargetBytes == 8 * Self.chunkBytes)
        clock.advance(by: .seconds(1))
        actions = Self.complete(&scheduler, actions, until: Self.startsGuest)
        #expect(Self.startsGuest(actions))
        #expect(scheduler.bufferedStartupBytes == 8 * Self.chunkBytes, "the guest starts with boot local and A still to come")
        let aChunks = Set((20..<28).map(Self.disk))
        #expect(aChunks.isSubset(of: scheduler.outstandingLocations), "A is on its way, not waited for")
        // After the start A streams, and entering boot makes it urgent (cluster-ahead).
        let entering = scheduler.accessed(Self.disk(0), waited: false)
        let later = Self.complete(&scheduler, actions + entering)
        #expect(aChunks.isSubset(of: Set(Self.fetches(later))))
        #expect(aChunks.allSatisfy { !scheduler.outstandingLocations.contains($0) })
    }

    @Test func enteringAnUnpredictedClusterMakesItUrgentAndCancelsOffPathWork() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.vtube, clock: clock) { $0.minimumOutstandingBytes = 12 * Self.chunkBytes }
        let first = scheduler.start()
        #expect(Self.fetches(first) == (Array(0..<8) + Array(20..<24)).map(Self.disk))
        for index in 0..<8 { _ = scheduler.fetched(Self.disk(index)) }
        // Enter boot (predicted), then jump into B instead of A.
        _ = scheduler.accessed(Self.disk(0), waited: false)
        let outstandingA = scheduler.outstandingLocations.filter { (20..<28).contains($0.index) }
        #expect(!outstandingA.isEmpty)
        let jump = scheduler.accessed(Self.disk(40), waited: true)
        let cancelled = jump.compactMap { if case .cancel(let location) = $0 { return location } else { return nil } }
        #expect(Set(cancelled) == outstandingA)
        // B's chunks not yet on their way come first, ranked before everything issued earlier.
        let urgent = jump.compactMap { if case .fetch(let location, let rank) = $0 { return (location, rank) } else { return nil } }
        #expect(Array(urgent.map(\.0).prefix(4)) == (44..<48).map(Self.disk))
        #expect(urgent.allSatisfy { $0.1 < 0 })
    }

    @Test func cancelledPrefetchesComeBackFirstAmongTheBackgroundWork() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.vtube, clock: clock) {
            $0.minimumOutstandingBytes = 12 * Self.chunkBytes
            $0.complete = true // the whole image queued behind the working set
        }
        _ = scheduler.start()
        for index in 0..<8 { _ = scheduler.fetched(Self.disk(index)) }
        _ = scheduler.accessed(Self.disk(0), waited: false)
        let jump = scheduler.accessed(Self.disk(40), waited: true)
        let cancelled = jump.compactMap { if case .cancel(let location) = $0 { return location } else { return nil } }
        #expect(!cancelled.isEmpty)
        // After B's own chunks, the cancelled ones of A are issued again, in their first order,
        // before the rest of the image (not behind it, where the guest would reach them first).
        let issued = Self.fetches(Self.complete(&scheduler, jump)).filter { !(40..<48).contains($0.index) }
        #expect(Array(issued.prefix(cancelled.count)) == cancelled.sorted())
    }

    @Test func bufferingEndsAtTheDeadlineOnAHopelessLink() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.full, clock: clock) { $0.maximumBuffering = .seconds(30) }
        #expect(!Self.startsGuest(scheduler.start()))
        clock.advance(by: .seconds(29))
        #expect(!Self.startsGuest(scheduler.tick(bandwidthBytesPerSecond: nil, rttSeconds: nil)))
        clock.advance(by: .seconds(1))
        #expect(Self.startsGuest(scheduler.tick(bandwidthBytesPerSecond: nil, rttSeconds: nil)))
        #expect(scheduler.guestStarted == clock.now)
    }

    @Test func failedPrefetchesAreRetriedThenLeftToDemand() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.none, model: nil, clock: clock) { $0.complete = true }
        var pending = Self.fetches(scheduler.start())
        var issuesOfChunkZero = pending.filter { $0 == Self.disk(0) }.count
        while !pending.isEmpty {
            let location = pending.removeFirst()
            let next = Self.fetches(location == Self.disk(0) ? scheduler.failed(location) : scheduler.fetched(location))
            issuesOfChunkZero += next.filter { $0 == Self.disk(0) }.count
            pending += next
        }
        #expect(issuesOfChunkZero == Scheduler.maximumFailures)
        #expect(scheduler.isIdle)
    }

    @Test func linkIsKeptFullWithAFewBandwidthDelayProducts() {
        let clock = ManualClock()
        var scheduler = Self.scheduler(.none, model: nil, clock: clock) { $0.complete = true; $0.minimumOutstandingBytes = Self.chunkBytes }
        _ = scheduler.start()
        // 12.5 MB/s × 100 ms = 1.25 MB BDP; 4 BDPs = 5 MB outstanding ≈ 77 chunks.
        let more = Self.fetches(scheduler.tick(bandwidthBytesPerSecond: 12.5e6, rttSeconds: 0.1))
        #expect(more.count + 1 == Int((4 * 12.5e6 * 0.1 / Double(Self.chunkBytes)).rounded(.up)))
    }
}
