import Dilation
import Foundation
import Hypervisor
import Logging

/// Perceived disk throughput of the test guest (`mode=diskrate`): 64 KiB sequential reads timed by
/// its TSC at the frequency it was told, so the figure is in the guest's time. The guest runs under
/// `disk.factor` with its disk held to `disk.realLimit`: a correct dilation makes the perceived rate
/// the disk's perceived rate whatever the factor.
public enum DiskRateProbe {
    public struct Result: Sendable {
        public var bytes: Int
        public var requests: Int
        public var perceivedSeconds: Double
        public var realSeconds: Double
        public var perceivedBytesPerSecond: Double
        /// Seconds the device held requests back (the throttle's own count).
        public var throttledSeconds: Double
    }

    /// `diskMiB` of the host's sector pattern in a scratch file (the guest checks it), `readMiB` read.
    public static func run(guestImage: [UInt8], disk: DilatedDisk, limitCPU: Bool, diskMiB: Int = 4, readMiB: Int = 2,
                           logger: Logger) throws -> Result {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("streamvm-diskrate-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img").path
        defer { unlink(path) }
        try patternDisk(sectors: diskMiB * 2048).write(to: URL(fileURLWithPath: path))
        let cpuLimit = limitCPU && disk.factor.value > 1 ? try VCPUCPULimit(factor: disk.factor) : nil
        defer { cpuLimit?.remove() }
        var configuration = MachineConfiguration(memorySize: 32 << 20, image: .flat(guestImage), commandLine: "mode=diskrate mib=\(readMiB)",
                                                 disks: [try RawFileBackend(path: path, readOnly: true)])
        try DilatedTimekeeping.onThisHost(factor: disk.factor).apply(to: &configuration)
        configuration.diskLimit = disk.realLimit
        if let cpuLimit { configuration.vcpuThreadStarted = { index, tid in try cpuLimit.place(vcpu: index, threadID: tid) } }
        let machine = try Machine(configuration: configuration, logger: logger)
        let start = ContinuousClock.now
        let reason = machine.run(timeout: .seconds(600))
        let elapsed = (ContinuousClock.now - start).components
        let words = GuestReportLine.words(machine.console.output, prefix: "diskrate bytes ")
        guard reason == .powerOff(code: 0), words.count == 9, let bytes = Int(words[2]), let requests = Int(words[4]),
              let cycles = Double(words[6]), let khz = Double(words[8]), cycles > 0, khz > 0 else {
            throw BenchmarkFailure("diskrate guest (\(reason)) gave no report: \(machine.console.output.suffix(400))")
        }
        let perceived = cycles / (khz * 1000)
        let throttled = machine.metrics().devices.compactMap(\.counters.throttledSeconds).reduce(0, +)
        return Result(bytes: bytes, requests: requests, perceivedSeconds: perceived,
                      realSeconds: Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18,
                      perceivedBytesPerSecond: Double(bytes) / perceived, throttledSeconds: throttled)
    }

    /// Sector `s` byte `i` holds (s * 7 + i) mod 256: the pattern the test guest checks.
    public static func patternDisk(sectors: Int) -> Data {
        var bytes = [UInt8](repeating: 0, count: sectors * 512)
        for sector in 0..<sectors { for index in 0..<512 { bytes[sector * 512 + index] = UInt8(truncatingIfNeeded: sector * 7 + index) } }
        return Data(bytes)
    }
}
