import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
@testable import Hypervisor

/// Keeps every log line a test's logger writes (warnings and above), to count them.
final class CapturedLog: Sendable {
    private let lines = Mutex<[String]>([])

    var messages: [String] { lines.withLock { $0 } }

    func logger(label: String) -> Logger {
        Logger(label: label) { _ in Handler(sink: self) }
    }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let sink: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .warning
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                 file: String, function: String, line: UInt) {
            sink.append("\(message) \(metadata.map { "\($0)" } ?? "")")
        }
    }
}

/// A clock the test moves by hand.
final class HandClock: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    var now: ContinuousClock.Instant { instant.withLock { $0 } }
    func advance(_ duration: Duration) { instant.withLock { $0 += duration } }
}

@Suite struct RateLimitedWarningsTests {
    @Test func aBurstIsWrittenTheRestCountedAndSummarisedOncePerInterval() {
        let log = CapturedLog()
        let clock = HandClock()
        let warnings = RateLimitedWarnings(logger: log.logger(label: "limit"), policy: .init(burst: 3, interval: .seconds(60)),
                                           now: { clock.now })
        for index in 0..<50 { warnings.warning("bad request \(index)") }
        #expect(log.messages.count == 3)
        #expect(log.messages.allSatisfy { $0.hasPrefix("bad request") })
        #expect(warnings.suppressed == 47)

        // Still inside the interval: nothing more is written.
        clock.advance(.seconds(30))
        warnings.warning("bad request 50")
        #expect(log.messages.count == 3)

        // The first warning of the next interval brings one summary line, then a new burst.
        clock.advance(.seconds(31))
        for index in 51..<60 { warnings.warning("bad request \(index)") }
        #expect(log.messages.count == 3 + 1 + 3)
        #expect(log.messages[3].contains("suppressed similar warnings") && log.messages[3].contains("48"))
        #expect(warnings.suppressed == 48 + 6)

        // flush accounts for the interval in progress, once.
        warnings.flush()
        warnings.flush()
        #expect(log.messages.count == 3 + 1 + 3 + 1)
        #expect(log.messages.last?.contains("6") == true)
    }

    @Test func belowTheBurstEveryWarningIsWritten() {
        let log = CapturedLog()
        let warnings = RateLimitedWarnings(logger: log.logger(label: "limit"), policy: .init(burst: 10, interval: .seconds(60)))
        for index in 0..<10 { warnings.warning("refused \(index)") }
        warnings.flush()
        #expect(log.messages.count == 10)
        #expect(warnings.suppressed == 0)
    }
}

/// The test guest's hostile mode, repeated: every refusal is counted per reason, the log is bounded.
@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: hostile guest accounting skipped"),
       .timeLimit(.minutes(3)), .offCooperativePool)
struct GuestErrorAccountingTests {
    func runHostile(rounds: Int, log: CapturedLog) throws -> (StopReason, String, VirtioErrorSnapshot) {
        let scratch = try ScratchDirectory()
        let path = scratch.file("disk.img")
        try Data(patternedDisk(sectors: 64)).write(to: URL(fileURLWithPath: path))
        let configuration = MachineConfiguration(memorySize: 128 << 20, image: .flat(try TestGuest.image.get()),
                                                 commandLine: "mode=hostile rounds=\(rounds)",
                                                 disks: [try RawFileBackend(path: path, readOnly: false)])
        let machine = try Machine(configuration: configuration, logger: log.logger(label: "hostile"))
        let reason = machine.run(timeout: .seconds(120))
        let transport = try #require(machine.blockDevices.first)
        return (reason, machine.console.output, transport.errorSnapshot())
    }

    @Test func refusalsAreCountedPerReasonAndTheLogStaysBounded() throws {
        let (onceLog, manyLog) = (CapturedLog(), CapturedLog())
        let (onceReason, onceConsole, once) = try runHostile(rounds: 1, log: onceLog)
        #expect(onceReason == .powerOff(code: 0), "console: \(onceConsole)")
        #expect(once.device == "virtio-blk")
        // One of each thing the guest does wrong (guest.c hostile_test).
        for reason in ["descriptor_chain_loops", "buffer_outside_memory", "zero_length_buffer", "indirect_not_negotiated",
                       "readable_after_writable", "available_index_too_far_ahead", "invalid_queue_setup",
                       "bad_request_range", "no_status_byte", "short_header"] {
            #expect((once.refusals[reason] ?? 0) >= 1, "\(reason): \(once.refusals)")
        }
        #expect((once.refusals["descriptor_index_out_of_range"] ?? 0) >= 2, "next and head out of range: \(once.refusals)")

        let rounds = 20
        let (manyReason, manyConsole, many) = try runHostile(rounds: rounds, log: manyLog)
        #expect(manyReason == .powerOff(code: 0), "console: \(manyConsole)")
        // The counters rise with every round...
        for (reason, count) in once.refusals { #expect(many.refusals[reason] == count * UInt64(rounds), "\(reason)") }
        #expect(many.total == once.total * UInt64(rounds))
        // ...while the log holds at most a burst (plus summaries, one per interval) and says how much it held back.
        let warnings = manyLog.messages.filter { $0.hasPrefix("virtio-mmio") || $0.hasPrefix("suppressed similar warnings") }
        let burst = RateLimitedWarnings.Policy.standard.burst
        #expect(warnings.count <= burst + 2, "\(warnings.count) lines for \(many.total) refusals")
        #expect(many.suppressedLogLines > 0)
        let written = UInt64(warnings.filter { $0.hasPrefix("virtio-mmio") }.count)
        let transportRefusals = many.refusals.filter { !["bad_request_range", "no_status_byte", "short_header"].contains($0.key) }
            .values.reduce(0, +)
        #expect(written + many.suppressedLogLines == transportRefusals)
    }
}
