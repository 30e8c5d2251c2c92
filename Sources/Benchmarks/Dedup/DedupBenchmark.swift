import Dedup
import Foundation
import Hypervisor
import Logging

/// `streamvm bench dedup`: host memory used by the guest RAM of a mix of running machines (several
/// copies of one test guest and a few different ones, `mode=dedupfill`), in one run, with nothing,
/// with KSM at its best (anonymous private RAM, MADV_MERGEABLE, ksmd given the same pages-per-second
/// budget as the engine) and with the dedup engine; plus the workload's slowdown, a fault storm on
/// the engine's pages, and a byte-for-byte check of every guest's memory.
///
/// The guests' memory is a synthetic fill pattern: these figures test the engine and compare it
/// with KSM on this host; they are not the headline, which needs Linux guests (the lab).
public struct DedupBenchmark: Sendable {
    public struct Options: Sendable {
        public var guestImage: String
        /// Machines running the same guest (seed 1), and machines with their own seeds.
        public var copies: Int
        public var different: Int
        public var regionMiB: Int
        public var memoryMiB: Int
        /// Time each configuration runs after every guest filled its memory, before memory is measured.
        public var settle: Duration
        /// `dedupfill round` lines (one per 64 rounds) each guest prints in the timed workload.
        public var workloadLines: Int
        public var pagesPerScan: Int
        public var interval: Duration

        public init(guestImage: String, quick: Bool) {
            self.guestImage = guestImage
            // Quick: 2 copies + 1 different guest with 2 MiB regions; a 3 + 2 × 8 MiB mix took
            // over 15 minutes on the 2-core dev host at load 15 (debug build).
            copies = quick ? 2 : 6
            different = quick ? 1 : 3
            regionMiB = quick ? 2 : 32
            memoryMiB = quick ? 32 : 64
            settle = .seconds(quick ? 15 : 60)
            workloadLines = quick ? 1 : 4
            pagesPerScan = 2048
            interval = .milliseconds(250)
        }
    }

    public struct Scenario: Codable, Sendable {
        public var name: String
        public var guestRam: ProportionalMemorySummary
        /// Bytes the engine holds to rebuild dropped pages (references + deltas + compressed pages;
        /// its index and allocator overhead are not counted).
        public var engineHeldBytes: Int
        public var fillSeconds: Double
        public var workloadSeconds: Double
        /// All guests reading and checking every byte of their region at once (for the engine: the
        /// fault storm, every dropped page rebuilt).
        public var verifySeconds: Double
        public var badPages: Int
        /// CPU time of the dedup mechanism during the settle window: the engine's scan thread, or ksmd.
        public var mechanismCPUSeconds: Double
    }

    public struct ProportionalMemorySummary: Codable, Sendable {
        public var pssBytes: Int
        public var rssBytes: Int
        public var ksmBytes: Int
    }

    public struct Report: Codable, Sendable {
        public var host: String
        public var load: String
        public var note: String
        public var machines: Int
        public var copiesOfOneGuest: Int
        public var differentGuests: Int
        public var regionMibPerGuest: Int
        public var guestMibPerMachine: Int
        public var scenarios: [Scenario]
        public var baselineBytes: Int
        public var ksmSavedBytes: Int
        public var engineSavedBytes: Int
        public var engineVsKsm: Double
        public var slowdown: Double
        public var corruptedBytes: Int
        public var engineSavingsByMechanism: [String: Int]
        public var engineFaultsServed: [String: Int]
        public var faultStormPages: Int
        public var faultStormMicrosecondsPerPage: Double
        public var engineScanCpuSecondsPerGib: Double
        public var ksmdCpuSecondsPerGib: Double
        public var enginePausesPerSecond: Double
        public var enginePauseMicrosecondsMean: Double
        public var engineRacesAbandoned: Int

        public var table: String {
            var lines = ["| configuration | guest RAM PSS MiB | held by engine MiB | fill s | workload s | verify s | bad pages | CPU s |",
                         "|---|---|---|---|---|---|---|---|"]
            for scenario in scenarios {
                lines.append(String(format: "| %@ | %.1f | %.1f | %.2f | %.2f | %.2f | %d | %.2f |", scenario.name,
                                    Double(scenario.guestRam.pssBytes) / 1_048_576, Double(scenario.engineHeldBytes) / 1_048_576,
                                    scenario.fillSeconds, scenario.workloadSeconds, scenario.verifySeconds, scenario.badPages, scenario.mechanismCPUSeconds))
            }
            lines.append("")
            lines.append(String(format: "engine_vs_ksm %.2f, slowdown %.3f, corrupted_bytes %d, fault storm %d pages at %.0f µs each", engineVsKsm, slowdown,
                                corruptedBytes, faultStormPages, faultStormMicrosecondsPerPage))
            lines.append(note)
            return lines.joined(separator: "\n") + "\n"
        }
    }

    public let options: Options
    let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    public func run() throws -> Report {
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: options.guestImage)))
        guard KSMControl.isAvailable else { throw BenchmarkFailure("\(KSMControl.directory)/run is not writable: KSM, the peer, cannot be set up (run as root on a kernel with CONFIG_KSM)") }
        let seeds = Array(repeating: 1, count: options.copies) + (0..<options.different).map { $0 + 2 }
        let none = try scenario("none", image: image, seeds: seeds, engine: nil, ksm: false)
        let ksm = try scenario("ksm", image: image, seeds: seeds, engine: nil, ksm: true)
        let engine = try DedupEngine(configuration: DedupConfiguration(mode: .full, pagesPerScan: options.pagesPerScan, interval: options.interval))
        let engineScenario = try scenario("engine", image: image, seeds: seeds, engine: engine, ksm: false)
        guard let statistics = lastStatistics.withLock({ $0 }) else { throw BenchmarkFailure("the engine scenario left no statistics") }
        let baseline = none.guestRam.pssBytes
        let ksmSaved = baseline - ksm.guestRam.pssBytes
        let engineSaved = baseline - engineScenario.guestRam.pssBytes - engineScenario.engineHeldBytes
        let guestGiB = Double(seeds.count * options.regionMiB) / 1024
        let storm = statistics.faultsServed.values.reduce(0, +)
        let settleSeconds = Self.seconds(options.settle)
        return Report(
            host: HostFacts.hostName(), load: HostFacts.loadAverage(),
            note: "synthetic test-guest memory (appliances/testguest mode=dedupfill): tests the engine and compares it with KSM on this host; not the issue's headline, which needs Linux guests (scripts/lab)",
            machines: seeds.count, copiesOfOneGuest: options.copies, differentGuests: options.different, regionMibPerGuest: options.regionMiB,
            guestMibPerMachine: options.memoryMiB, scenarios: [none, ksm, engineScenario],
            baselineBytes: baseline, ksmSavedBytes: ksmSaved, engineSavedBytes: engineSaved,
            engineVsKsm: ksmSaved > 0 ? Double(engineSaved) / Double(ksmSaved) : 0,
            slowdown: none.workloadSeconds > 0 ? engineScenario.workloadSeconds / none.workloadSeconds : 0,
            corruptedBytes: (none.badPages + ksm.badPages + engineScenario.badPages) * GuestMemory.pageSize,
            engineSavingsByMechanism: Dictionary(uniqueKeysWithValues: DedupMechanism.allCases.map { ($0.rawValue, statisticsBeforeVerify.withLock { $0 }?.bytesSaved(by: $0) ?? 0) }),
            engineFaultsServed: Dictionary(uniqueKeysWithValues: DedupMechanism.allCases.map { ($0.rawValue, statistics.faultsServed[$0] ?? 0) }),
            faultStormPages: storm, faultStormMicrosecondsPerPage: storm > 0 ? engineScenario.verifySeconds * 1e6 / Double(storm) : 0,
            engineScanCpuSecondsPerGib: engineScenario.mechanismCPUSeconds / guestGiB,
            ksmdCpuSecondsPerGib: ksm.mechanismCPUSeconds / guestGiB,
            enginePausesPerSecond: Double(statistics.pauses) / max(settleSeconds, 1),
            enginePauseMicrosecondsMean: statistics.pauses > 0 ? Double(statistics.pausedNanoseconds) / Double(statistics.pauses) / 1000 : 0,
            engineRacesAbandoned: statistics.racesAbandoned)
    }

    private let lastStatistics = Locked<DedupStatistics?>(nil)
    private let statisticsBeforeVerify = Locked<DedupStatistics?>(nil)

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    private func scenario(_ name: String, image: [UInt8], seeds: [Int], engine: DedupEngine?, ksm: Bool) throws -> Scenario {
        var machines: [Machine] = []
        let ksmBefore = ksm ? try KSMControl.current() : nil
        defer {
            engine?.stop()
            for machine in machines {
                machine.stop(.stopRequested)
                _ = machine.waitUntilStopped(timeout: .seconds(30))
                engine?.detach(machine)
            }
            if let ksmBefore {
                do { try KSMControl.restore(ksmBefore) } catch { logger.error("KSM settings not restored: \(error)") }
            }
        }
        for (index, seed) in seeds.enumerated() {
            var configuration = MachineConfiguration(memorySize: options.memoryMiB << 20, image: .flat(image),
                                                     commandLine: "mode=dedupfill mib=\(options.regionMiB) seed=\(seed) rewrite=4 spins=20000")
            configuration.memoryBacking = .anonymousPrivate
            let store = try engine?.makeStore(memorySize: options.memoryMiB << 20)
            configuration.pageSource = store
            let machine = try Machine(configuration: configuration, logger: Logger(label: "bench-dedup-\(name)-\(index)"))
            if let engine, let store { try engine.attach(machine, store: store) }
            machines.append(machine)
        }
        let started = ContinuousClock.now
        for machine in machines { try machine.start() }
        for machine in machines where !Self.wait(machine, "STREAMVM-READY", limit: .seconds(600)) {
            throw BenchmarkFailure("\(name): a dedupfill guest did not fill its memory: \(machine.console.output.suffix(300))")
        }
        let fill = ContinuousClock.now - started
        if ksm {
            for machine in machines { try machine.memory.adviseMergeable() }
            try KSMControl.apply(.init(run: 1, pagesToScan: options.pagesPerScan * machines.count,
                                       sleepMilliseconds: Int(Self.seconds(options.interval) * 1000)))
        }
        let cpuBefore = ksm ? KSMControl.ksmdCPUNanoseconds() : 0
        engine?.start()
        let settleStart = ContinuousClock.now
        let linesBefore = machines.map { $0.console.output.components(separatedBy: "dedupfill round ").count - 1 }
        for (machine, before) in zip(machines, linesBefore)
        where !Self.wait(machine, "dedupfill round ", count: before + options.workloadLines, limit: .seconds(600)) {
            throw BenchmarkFailure("\(name): a guest stopped making progress: \(machine.console.output.suffix(300))")
        }
        let workload = ContinuousClock.now - settleStart
        let remaining = options.settle - workload
        if remaining > .zero { Thread.sleep(forTimeInterval: Self.seconds(remaining)) }
        let ranges = machines.map { (start: UInt(bitPattern: $0.memory.hostAddress(ofPage: 0)), length: $0.memory.size) }
        let memory = try ProportionalMemory.of(ranges: ranges)
        let cpu: UInt64
        if let engine {
            engine.stop()
            let statistics = engine.statistics
            statisticsBeforeVerify.withLock { $0 = statistics }
            cpu = statistics.scanCPUNanoseconds
        } else {
            cpu = ksm ? KSMControl.ksmdCPUNanoseconds() - cpuBefore : 0
        }
        let held = engine.map { $0.statistics.referencePages * GuestMemory.pageSize + $0.statistics.encodedBytes } ?? 0
        // Every guest checks every byte of its region at once (the engine's fault storm).
        let verifyStart = ContinuousClock.now
        let before = machines.map { $0.console.output.components(separatedBy: "dedupfill verified").count - 1 }
        for machine in machines { machine.serial.enqueueInput(Array("STREAMVM-VERIFY\n".utf8)) }
        var bad = 0
        for (machine, count) in zip(machines, before) {
            guard Self.wait(machine, "dedupfill verified", count: count + 1, limit: .seconds(600)),
                  Self.wait(machine, "dedupfill verified", count: count + 1, limit: .seconds(10), lineComplete: true),
                  let line = machine.console.output.split(whereSeparator: \.isNewline).last(where: { $0.contains("dedupfill verified") }),
                  let badField = line.split(separator: " ").drop(while: { $0 != "bad" }).dropFirst().first,
                  let badPages = Int(badField.dropFirst(2), radix: 16) else {
                throw BenchmarkFailure("\(name): a guest did not report its memory check: \(machine.console.output.suffix(300))")
            }
            bad += badPages
        }
        let verify = ContinuousClock.now - verifyStart
        if let engine { lastStatistics.withLock { $0 = engine.statistics } }
        logger.info("dedup bench scenario done", metadata: ["scenario": "\(name)", "pssMiB": "\(memory.pssBytes >> 20)"])
        return Scenario(name: name, guestRam: ProportionalMemorySummary(pssBytes: memory.pssBytes, rssBytes: memory.rssBytes, ksmBytes: memory.ksmBytes),
                        engineHeldBytes: held, fillSeconds: Self.seconds(fill), workloadSeconds: Self.seconds(workload),
                        verifySeconds: Self.seconds(verify), badPages: bad, mechanismCPUSeconds: Double(cpu) / 1e9)
    }

    /// Polls the console until `text` appeared `count` times (with `lineComplete`, and its last line ended).
    static func wait(_ machine: Machine, _ text: String, count: Int = 1, limit: Duration, lineComplete: Bool = false) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let parts = machine.console.output.components(separatedBy: text)
            if parts.count - 1 >= count && (!lineComplete || parts.last!.contains(where: \.isNewline)) { return true }
            if machine.state == .stopped { break }
            usleep(20_000)
        }
        return machine.console.output.components(separatedBy: text).count - 1 >= count
    }
}
