import Dilation
import Foundation
import Hypervisor
import Logging
import Synchronization

/// Perceived CPU speed of the test guest (`mode=cpurate`): steps of a multiply-add chain per second
/// of the guest's own (possibly dilated) time. With the CPU limit, a dilated vCPU gets 1/TDF of a
/// core, so the guest perceives one core's speed; without it, TDF times that.
public enum CPURateProbe {
    public struct Result: Sendable {
        public var steps: Int
        public var perceivedSeconds: Double
        public var realSeconds: Double
        public var perceivedStepsPerSecond: Double
        /// CPU time the vCPU thread used over the run (its schedstat), and that over real time.
        public var vcpuCPUSeconds: Double?
        public var coreShare: Double? { vcpuCPUSeconds.map { $0 / max(realSeconds, 1e-9) } }
        public var throttledSeconds: Double?
    }

    /// `limit`: hold the vCPU to 1/TDF of a core (`VCPUCPULimit`), or run it unlimited.
    public static func run(guestImage: [UInt8], factor: DilationFactor, limit: Bool, rounds: Int, work: Int, logger: Logger) throws -> Result {
        let cpuLimit = limit ? try VCPUCPULimit(factor: factor) : nil
        defer { cpuLimit?.remove() }
        let threadID = Mutex<Int32?>(nil)
        let cpuSeconds = Mutex<Double?>(nil)
        var configuration = MachineConfiguration(memorySize: 32 << 20, image: .flat(guestImage),
                                                 commandLine: "mode=cpurate rounds=\(rounds) work=\(work)")
        try DilatedTimekeeping.onThisHost(factor: factor).apply(to: &configuration)
        configuration.vcpuThreadStarted = { index, tid in
            threadID.withLock { $0 = tid }
            try cpuLimit?.place(vcpu: index, threadID: tid)
        }
        // The vCPU thread's CPU time is read just before the guest powers off (its last console
        // line), while the thread still exists.
        let marker = Array("cpurate steps ".utf8)
        let line = Mutex<[UInt8]>([])
        configuration.consoleOutput = { byte in
            let complete = line.withLock { buffer -> Bool in
                if byte == UInt8(ascii: "\n") { defer { buffer.removeAll() }; return buffer.starts(with: marker) }
                if buffer.count < 128 { buffer.append(byte) }
                return false
            }
            if complete, let tid = threadID.withLock({ $0 }) { cpuSeconds.withLock { $0 = threadCPUSeconds(tid) } }
        }
        let machine = try Machine(configuration: configuration, logger: logger)
        let start = ContinuousClock.now
        let reason = machine.run(timeout: .seconds(600))
        let elapsed = (ContinuousClock.now - start).components
        let words = GuestReportLine.words(machine.console.output, prefix: "cpurate steps ")
        guard reason == .powerOff(code: 0), words.count == 7, let steps = Int(words[2]), let cycles = Double(words[4]),
              let khz = Double(words[6]), cycles > 0, khz > 0 else {
            throw BenchmarkFailure("cpurate guest (\(reason)) gave no report: \(machine.console.output.suffix(400))")
        }
        let perceived = cycles / (khz * 1000)
        return Result(steps: steps, perceivedSeconds: perceived,
                      realSeconds: Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18,
                      perceivedStepsPerSecond: Double(steps) / perceived, vcpuCPUSeconds: cpuSeconds.withLock { $0 },
                      throttledSeconds: cpuLimit?.throttledMicroseconds(vcpu: 0).map { Double($0) / 1e6 })
    }

    /// Time thread `tid` of this process has run, from /proc/self/task/<tid>/schedstat (ns).
    static func threadCPUSeconds(_ tid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/self/task/\(tid)/schedstat", encoding: .utf8),
              let first = text.split(separator: " ").first, let nanoseconds = Double(first) else { return nil }
        return nanoseconds / 1e9
    }
}
