import Dilation
import Foundation
import Hypervisor
import Logging

/// Runs the test guest's clock mode (`mode=clock`: a line each time `tickMilliseconds` pass by the
/// guest's TSC, at the frequency it was told) and stamps each line with the host's monotonic clock
/// as its last byte arrives, so perceived and real time can be set side by side.
public enum ClockProbe {
    public struct Result: Sendable {
        /// The TSC frequency the guest used (0: it found none) and whether kvmclock was offered.
        public var guestTSCKHz: Int
        public var kvmclockOffered: Bool
        /// Host seconds (monotonic) at which each tick line completed, in order.
        public var tickSeconds: [Double]
        public var tickMilliseconds: Int
        public var stopReason: StopReason
        public var console: String

        /// Guest seconds per host second between the first and the last tick (nil with < 2 ticks):
        /// 1/TDF for a correctly dilated guest.
        public var perceivedPerReal: Double? {
            guard tickSeconds.count >= 2, let first = tickSeconds.first, let last = tickSeconds.last, last > first else { return nil }
            return Double(tickSeconds.count - 1) * Double(tickMilliseconds) / 1000 / (last - first)
        }
    }

    /// Boots `guestImage` with `factor` (nil: not dilated, and the guest then finds no frequency
    /// unless KVM states one) and runs it to the end.
    public static func run(guestImage: [UInt8], factor: DilationFactor?, ticks: Int, tickMilliseconds: Int, logger: Logger) throws -> Result {
        let lines = ClockTickRecorder()
        var configuration = MachineConfiguration(memorySize: 32 << 20, image: .flat(guestImage),
                                                 commandLine: "mode=clock ticks=\(ticks) tick_ms=\(tickMilliseconds)",
                                                 consoleOutput: { lines.receive($0) })
        if let factor { try DilatedTimekeeping.onThisHost(factor: factor).apply(to: &configuration) }
        let machine = try Machine(configuration: configuration, logger: logger)
        let limit = Double(ticks * tickMilliseconds) / 1000 * (factor?.value ?? 1) + 60
        let reason = machine.run(timeout: .milliseconds(Int(limit * 1000)))
        let console = machine.console.output
        let header = console.split(whereSeparator: \.isNewline).first { $0.hasPrefix("clock tsc_khz ") }.map(String.init) ?? ""
        let words = header.split(separator: " ")
        return Result(guestTSCKHz: words.count > 2 ? Int(words[2]) ?? 0 : 0, kvmclockOffered: header.hasSuffix("kvmclock offered"),
                      tickSeconds: lines.tickSeconds, tickMilliseconds: tickMilliseconds, stopReason: reason, console: console)
    }
}

/// Collects console bytes into lines and notes when each "clock tick" line ends (host monotonic
/// seconds from its creation): wire `receive` to a machine's console output.
public final class ClockTickRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var line: [UInt8] = []
    private var ticks: [Double] = []
    private static let prefix = Array("clock tick ".utf8)
    private let origin = ContinuousClock.now

    public init() {}

    public func receive(_ byte: UInt8) {
        let now = ContinuousClock.now
        lock.withLock {
            guard byte == UInt8(ascii: "\n") else {
                if line.count < 256 { line.append(byte) }
                return
            }
            if line.starts(with: Self.prefix) {
                let elapsed = (now - origin).components
                ticks.append(Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
            }
            line.removeAll(keepingCapacity: true)
        }
    }

    public var tickSeconds: [Double] { lock.withLock { ticks } }
}
