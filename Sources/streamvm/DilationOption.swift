import ArgumentParser
import Dilation
import Hypervisor

/// `--tdf X` for the commands that run a guest: time dilation (docs/DILATION.md).
struct DilationOption: ParsableArguments {
    @Option(name: .customLong("tdf"),
            help: "Time-dilation factor (1-1000, fractional allowed): the guest perceives time this many times slower, so the host looks this many times faster to it (docs/DILATION.md). A snapshot resumes only under the factor it was taken with.")
    var factor: Double?

    @Option(name: .customLong("tdf-cpu"),
            help: "With --tdf: 'on' holds each vCPU to 1/TDF of a core (cgroup CPU limit) so the guest perceives one core's speed; 'off' dilates time alone.")
    var cpu: CPUScaling = .on

    @Option(name: .customLong("disk-rate"),
            help: "Each disk's rate as the guest perceives it, in MB/s (10^6 bytes): with --tdf the host holds the device to this ÷ TDF. Without it a dilated guest perceives the host's disk TDF times faster.")
    var diskRate: Double?

    @Option(name: .customLong("disk-latency"),
            help: "Milliseconds each disk request takes as the guest perceives it (added to the host's own; × TDF with --tdf).")
    var diskLatency: Double?

    enum CPUScaling: String, ExpressibleByArgument, CaseIterable {
        case on
        case off
    }

    func validate() throws {
        if let factor {
            do { _ = try DilationFactor(factor) } catch { throw ValidationError("--tdf: \(error)") }
        }
        if let diskRate, !(diskRate.isFinite && diskRate * 1e6 >= 1 && diskRate <= 1e6) {
            throw ValidationError("--disk-rate: \(diskRate) MB/s is not between 0.000001 and 1000000")
        }
        if let diskLatency, !(diskLatency.isFinite && diskLatency >= 0 && diskLatency <= 10_000) {
            throw ValidationError("--disk-latency: \(diskLatency) ms is not between 0 and 10000")
        }
    }

    /// What a run needs for its dilation: nil without --tdf. Keep it for the run and call `finish()`
    /// after the machine has stopped.
    func prepare() throws -> DilationSetup? {
        guard factor != nil || diskRate != nil || diskLatency != nil else { return nil }
        let dilation = try factor.map { try DilationFactor($0) }
        let disk = diskRate != nil || diskLatency != nil
            ? DilatedDisk(perceivedBytesPerSecond: diskRate.map { UInt64(($0 * 1e6).rounded()) },
                          perceivedLatencyMilliseconds: diskLatency ?? 0, factor: dilation ?? .none)
            : nil
        let cpuLimit = if let dilation, cpu == .on, dilation.value > 1 { try VCPUCPULimit(factor: dilation) } else { VCPUCPULimit?.none }
        return DilationSetup(factor: dilation, cpuLimit: cpuLimit, disk: disk)
    }
}

/// One run's dilation: the timekeeping the guest is told (nil factor: none, the disk limit alone),
/// the CPU limit its vCPU threads get and the limit its disks get.
final class DilationSetup: Sendable {
    let factor: DilationFactor?
    let cpuLimit: VCPUCPULimit?
    let disk: DilatedDisk?

    init(factor: DilationFactor?, cpuLimit: VCPUCPULimit?, disk: DilatedDisk?) {
        self.factor = factor
        self.cpuLimit = cpuLimit
        self.disk = disk
    }

    /// Dilates a boot, or checks that a resume keeps its snapshot's factor (1 without a setup, so a
    /// dilated snapshot is never resumed undilated by accident).
    static func apply(_ setup: DilationSetup?, to configuration: inout MachineConfiguration) throws {
        configuration.diskLimit = setup?.disk?.realLimit
        guard let setup, let factor = setup.factor else {
            if let restore = configuration.restore { try DilatedTimekeeping.checkResume(restore, factor: .none) }
            return
        }
        try DilatedTimekeeping.onThisHost(factor: factor).apply(to: &configuration)
        if let limit = setup.cpuLimit {
            configuration.vcpuThreadStarted = { index, threadID in try limit.place(vcpu: index, threadID: threadID) }
        }
    }

    func finish() { cpuLimit?.remove() }
}
