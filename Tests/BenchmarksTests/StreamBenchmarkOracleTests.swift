import Catalog
import Foundation
import Benchmarks
import StreamBoot
import Testing

/// `bench stream`'s per-run oracle: RTT + compressed bytes of the chunks that run's own guest
/// touched before READY ÷ rate (issue #15: one oracle from the `none` run over-counts fast modes).
struct StreamBenchmarkOracleTests {
    static let chunkSize = 4096
    static func ref(_ seed: UInt8, stored: Int) -> ChunkRef { ChunkRef(id: Digest.of(Data([seed])), stored: stored) }

    /// A kernel of 2 chunks (stored 300 + 200) and a disk whose chunk 3 repeats chunk 0 and chunk 2 is zero.
    static let manifest = Manifest(
        config: ApplianceConfig(name: "app", version: "1", memoryMiB: 64, vcpus: 1), chunkSize: chunkSize, dictionaries: [],
        artifacts: [
            Artifact(role: .kernel, size: 2 * chunkSize, digest: Digest.of(Data("k".utf8)), chunks: [ref(1, stored: 300), ref(2, stored: 200)]),
            Artifact(role: .disk, size: 6 * chunkSize, digest: Digest.of(Data("d".utf8)),
                     chunks: [ref(10, stored: 1000), ref(11, stored: 2000), nil, ref(10, stored: 1000), ref(13, stored: 4000), ref(14, stored: 500)]),
        ])

    static func record(_ index: Int, at seconds: Double, _ outcome: RunTrace.Outcome) -> RunTrace.Record {
        let chunk = manifest.artifact(.disk)?.chunks[index]?.id
        return RunTrace.Record(location: ChunkLocation(role: .disk, index: index), chunk: chunk, offset: index * chunkSize,
                               wallSeconds: seconds, guestSeconds: seconds, outcome: outcome, stallSeconds: 0)
    }

    static func trace(_ records: [RunTrace.Record], ready: Double?) -> RunTrace {
        RunTrace(appliance: "app", version: "1", manifest: Digest.of(Data("m".utf8)), prefetch: "vtube", model: nil,
                 started: Date(timeIntervalSince1970: 1_700_000_000), readySeconds: ready, records: records)
    }

    @Test func countsWhatThisGuestTouchedBeforeReadyOnceEach() throws {
        // Before READY at 5 s: chunk 0 (a miss), 1 (prefetched), 2 (zero: costs nothing), 3 (the same
        // content as chunk 0: fetched once), an overlay hit (local writes), then chunk 4 after READY.
        var records: [RunTrace.Record] = [Self.record(0, at: 1, .demandMiss), Self.record(1, at: 2, .prefetchHit)]
        records += [Self.record(2, at: 3, .zero), Self.record(3, at: 4, .cached)]
        records += [Self.record(5, at: 4.5, .overlay), Self.record(4, at: 6, .demandMiss)]
        let bytes = try StreamBenchmark.bytesNeeded(before: 5, trace: Self.trace(records, ready: 5), manifest: Self.manifest)
        #expect(bytes == 300 + 200 + 1000 + 2000)
    }

    @Test func eachRunHasItsOwnOracleFromItsOwnBytes() throws {
        let profile = StreamBenchmark.Profile(name: "test", rateMbit: 8, rttMs: 50)  // 1,000,000 bytes/s
        // A slow run touches chunks 0, 1 and 4 before READY; a fast one only chunk 0.
        let slowRecords: [RunTrace.Record] = [Self.record(0, at: 1, .demandMiss), Self.record(1, at: 5, .demandMiss),
                                              Self.record(4, at: 9, .demandMiss)]
        let fastRecords: [RunTrace.Record] = [Self.record(0, at: 0.1, .prefetchHit), Self.record(1, at: 3, .prefetchHit),
                                              Self.record(4, at: 4, .prefetchHit)]
        let slow = Self.trace(slowRecords, ready: 10)
        let fast = Self.trace(fastRecords, ready: 2)
        let slowOracle = try StreamBenchmark.Oracle.of(trace: slow, ready: 10, manifest: Self.manifest, profile: profile)
        let fastOracle = try StreamBenchmark.Oracle.of(trace: fast, ready: 2, manifest: Self.manifest, profile: profile)
        #expect(slowOracle.bytes == 500 + 1000 + 2000 + 4000)
        #expect(fastOracle.bytes == 500 + 1000)
        let slowExpected: Double = 0.05 + 7500.0 / 1_000_000
        let fastExpected: Double = 0.05 + 1500.0 / 1_000_000
        #expect(abs(slowOracle.seconds - slowExpected) < 1e-12)
        #expect(abs(fastOracle.seconds - fastExpected) < 1e-12)
    }

    @Test func aResumeCountsTheDeviceStateNotTheKernel() {
        var resume = Self.manifest
        resume.artifacts.append(Artifact(role: .memory, size: Self.chunkSize, digest: Digest.of(Data("r".utf8)), chunks: [Self.ref(20, stored: 70)]))
        resume.artifacts.append(Artifact(role: .state, size: Self.chunkSize, digest: Digest.of(Data("s".utf8)), chunks: [Self.ref(21, stored: 90)]))
        #expect(StreamBenchmark.bootArtifactBytes(resume) == 90)
        #expect(StreamBenchmark.bootArtifactBytes(Self.manifest) == 500)
    }
}
