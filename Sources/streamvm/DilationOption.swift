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

    enum CPUScaling: String, ExpressibleByArgument, CaseIterable {
        case on
        case off
    }

    func validate() throws {
        if let factor {
            do { _ = try DilationFactor(factor) } catch { throw ValidationError("--tdf: \(error)") }
        }
    }

    /// What a run needs for its dilation: nil without --tdf. Keep it for the run and call `finish()`
    /// after the machine has stopped.
    func prepare() throws -> DilationSetup? {
        guard let factor else { return nil }
        let dilation = try DilationFactor(factor)
        return DilationSetup(factor: dilation, cpuLimit: cpu == .on && dilation.value > 1 ? try VCPUCPULimit(factor: dilation) : nil)
    }
}

/// One run's dilation: the timekeeping the guest is told and the CPU limit its vCPU threads get.
final class DilationSetup: Sendable {
    let factor: DilationFactor
    let cpuLimit: VCPUCPULimit?

    init(factor: DilationFactor, cpuLimit: VCPUCPULimit?) {
        self.factor = factor
        self.cpuLimit = cpuLimit
    }

    /// Dilates a boot, or checks that a resume keeps its snapshot's factor (1 without a setup, so a
    /// dilated snapshot is never resumed undilated by accident).
    static func apply(_ setup: DilationSetup?, to configuration: inout MachineConfiguration) throws {
        guard let setup else {
            if let restore = configuration.restore { try DilatedTimekeeping.checkResume(restore, factor: .none) }
            return
        }
        try DilatedTimekeeping.onThisHost(factor: setup.factor).apply(to: &configuration)
        if let limit = setup.cpuLimit {
            configuration.vcpuThreadStarted = { index, threadID in try limit.place(vcpu: index, threadID: threadID) }
        }
    }

    func finish() { cpuLimit?.remove() }
}
