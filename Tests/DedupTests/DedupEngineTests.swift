import Dedup
import Foundation
import Hypervisor
import TestSupport
import Testing

/// The engine on real KVM machines running `mode=dedupfill`: while the guests keep rewriting pages,
/// the engine shares, patches and compresses, and afterwards every byte the guests wrote is intact.
@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: dedup engine tests skipped"),
       .timeLimit(.minutes(6)), .offCooperativePool, .serialized)
struct DedupEngineTests {
    /// Ages of 1–2 scans so a test sees every mechanism within a few scans.
    static func quickConfiguration(_ mode: DedupMode) -> DedupConfiguration {
        DedupConfiguration(mode: mode, pagesPerScan: 2048, interval: .milliseconds(50), shareAge: 1, patchAge: 2,
                           compressAge: 2, referenceAge: 2)
    }

    /// Scans until `done` holds for the statistics or `limit` passes.
    static func scan(_ engine: DedupEngine, until done: (DedupStatistics) -> Bool, limit: Duration = .seconds(120)) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            engine.scanOnce()
            if done(engine.statistics) { return true }
            usleep(50_000)
        }
        return done(engine.statistics)
    }

    @Test func threeRunningMachinesShareAcrossMachinesPatchAndCompressWithoutLosingAByte() throws {
        let engine = try DedupEngine(configuration: Self.quickConfiguration(.full))
        let machines = try [1, 1, 2].map { try DedupTestGuest.start(engine: engine, seed: $0) }
        defer { machines.forEach(DedupTestGuest.stop) }
        for machine in machines {
            #expect(DedupTestGuest.waitForConsole(machine, "STREAMVM-READY"), "console: \(machine.console.output)")
        }
        let reached = Self.scan(engine) { statistics in
            (statistics.storedPages[.shared] ?? 0) > 300 && (statistics.storedPages[.patched] ?? 0) > 100
                && (statistics.storedPages[.compressed] ?? 0) > 100
        }
        let statistics = engine.statistics
        #expect(reached, "\(statistics)")
        #expect(statistics.bytesSaved > 0, "\(statistics)")
        #expect(statistics.referencePages < statistics.storedPages[.shared] ?? 0, "identical pages share references")
        #expect(statistics.pauses > 0 && statistics.scanCPUNanoseconds > 0)
        // The guests kept rewriting pages the whole time (some of them dropped or being examined).
        for machine in machines {
            #expect(DedupTestGuest.waitForConsole(machine, "dedupfill round ", count: 1), "\(DedupTestGuest.describe(machine))")
            #expect(DedupTestGuest.badPages(machine) == 0, "\(DedupTestGuest.describe(machine))")
            #expect(!machine.console.output.contains("FAIL"))
        }
        let served = engine.statistics.faultsServed
        #expect((served[.shared] ?? 0) > 0 && (served[.patched] ?? 0) > 0 && (served[.compressed] ?? 0) > 0,
                "the verify read rebuilt pages of every kind: \(served)")
    }

    @Test func referencesOutliveTheMachineTheyCameFrom() throws {
        let engine = try DedupEngine(configuration: Self.quickConfiguration(.full))
        let first = try DedupTestGuest.start(engine: engine, seed: 1)
        #expect(DedupTestGuest.waitForConsole(first, "STREAMVM-READY"), "console: \(first.console.output)")
        #expect(Self.scan(engine) { $0.referencePages > 100 }, "\(engine.statistics)")
        let second = try DedupTestGuest.start(engine: engine, seed: 2)
        defer { DedupTestGuest.stop(second) }
        #expect(DedupTestGuest.waitForConsole(second, "STREAMVM-READY"), "console: \(second.console.output)")
        let patchedBefore = engine.statistics.storedPages[.patched] ?? 0
        #expect(Self.scan(engine) { ($0.storedPages[.patched] ?? 0) > patchedBefore + 100 }, "\(engine.statistics)")
        // The first machine exits while the second's patches and shared pages use its references.
        DedupTestGuest.stop(first)
        engine.detach(first)
        #expect(engine.statistics.referencePages > 0, "references the second machine uses stay alive")
        #expect(DedupTestGuest.badPages(second) == 0, "\(DedupTestGuest.describe(second))")
        #expect((engine.statistics.faultsServed[.patched] ?? 0) > 0)
        engine.detach(second)
    }

    @Test func shareModeNeitherPatchesNorCompresses() throws {
        let engine = try DedupEngine(configuration: Self.quickConfiguration(.share))
        let machines = try [1, 2].map { try DedupTestGuest.start(engine: engine, seed: $0) }
        defer { machines.forEach(DedupTestGuest.stop) }
        for machine in machines { #expect(DedupTestGuest.waitForConsole(machine, "STREAMVM-READY")) }
        #expect(Self.scan(engine) { ($0.storedPages[.shared] ?? 0) > 300 }, "\(engine.statistics)")
        #expect((engine.statistics.storedPages[.patched] ?? 0) == 0 && (engine.statistics.storedPages[.compressed] ?? 0) == 0)
        for machine in machines {
            #expect(DedupTestGuest.badPages(machine) == 0, "\(DedupTestGuest.describe(machine))")
        }
    }
}
