/// Errors of the Dilation module.
public enum DilationError: Error, Equatable, CustomStringConvertible {
    case invalidFactor(Double)
    /// The host's TSC frequency is unknown or too high to state `factor` times over in CPUID.
    case unusableTSCFrequency(kHz: Int, factor: Double)
    /// A snapshot's guest was told one factor and the run asks for another; only TSC scaling could
    /// change what the guest's TSC does, and this design does not use it yet.
    case resumeUnderAnotherFactor(snapshot: Double, requested: Double)
    /// No cgroup hierarchy offers the cpu controller (neither a cgroup2 mount with cpu nor a v1 cpu mount).
    case noCPUController
    /// A cgroup file or directory refused what the CPU limit needs.
    case cgroup(path: String, problem: String)

    public var description: String {
        switch self {
        case let .invalidFactor(value):
            "time-dilation factor \(value) is invalid: use a finite value from \(DilationFactor.range.lowerBound) to \(DilationFactor.range.upperBound)"
        case let .unusableTSCFrequency(kHz, factor):
            "cannot dilate by \(factor): the host's TSC frequency (\(kHz) kHz from KVM_GET_TSC_KHZ) times the factor does not fit CPUID's 32-bit kHz field"
        case let .resumeUnderAnotherFactor(snapshot, requested):
            "the snapshot was taken with time dilation factor \(snapshot) and this run asks for \(requested): a resumed guest keeps the TSC frequency it was told, so resume it with --tdf \(snapshot) (docs/DILATION.md)"
        case .noCPUController:
            "cannot hold vCPUs to 1/TDF of a core: no cgroup hierarchy with the cpu controller is mounted (cgroup2 with cpu in cgroup.controllers, or a v1 cpu mount); run with --tdf-cpu off to dilate time alone"
        case let .cgroup(path, problem):
            "cannot hold vCPUs to 1/TDF of a core: \(path): \(problem) (needs root or a delegated cgroup; --tdf-cpu off dilates time alone)"
        }
    }
}
