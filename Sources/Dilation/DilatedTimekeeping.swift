import Glibc
import Hypervisor

/// How a dilated guest is told about time on a host whose vCPU TSC runs at host speed (no TSC
/// scaling needed): the guest is told its TSC runs `factor` times faster than it does, so all it
/// derives from the TSC — its clocksource, TSC-deadline timer deadlines, delay loops, and a LAPIC
/// timer whose frequency it reads from CPUID — runs `factor` times slow. kvmclock, which reports
/// host time, is hidden; a CMOS RTC gives the guest its wall-clock time instead, running dilated
/// from the host's wall time at the machine's start. What is not dilated yet is in docs/DILATION.md (the in-kernel PIT).
///
/// Two channels carry the frequency, one per kind of guest:
/// - the kernel command line: `tsc_early_khz=` (Linux skips TSC calibration, which would measure
///   against the host-speed PIT and undo the dilation), `no-kvmclock`, `clocksource=tsc`,
///   `tsc=reliable` (no clocksource watchdog comparing the TSC against undilated references);
/// - CPUID leaf 0x40000010, the hypervisor timing leaf (EAX TSC kHz, EBX LAPIC timer kHz), which
///   also records the factor in ECX (TDF × 1000) so a resume can refuse another factor: a resumed
///   guest keeps the CPUID and calibration it booted with.
public struct DilatedTimekeeping: Sendable, Equatable {
    public static let hypervisorBaseLeaf: UInt32 = 0x4000_0000
    public static let kvmFeaturesLeaf: UInt32 = 0x4000_0001
    public static let timingLeaf: UInt32 = 0x4000_0010
    /// KVM_FEATURE_CLOCKSOURCE (bit 0), KVM_FEATURE_CLOCKSOURCE2 (3), KVM_FEATURE_CLOCKSOURCE_STABLE_BIT (24).
    public static let kvmclockFeatureBits: UInt32 = (1 << 0) | (1 << 3) | (1 << 24)
    /// KVM's in-kernel LAPIC timer counts one tick per nanosecond (APIC_BUS_CYCLE_NS = 1).
    public static let lapicTimerKHz = 1_000_000
    /// Leaves 0x15 (TSC/crystal ratio) and 0x16 (base frequency) state real frequencies: emptied.
    static let frequencyLeaves: Set<UInt32> = [0x15, 0x16]

    public let factor: DilationFactor
    /// What the vCPU's TSC really counts at (KVM_GET_TSC_KHZ).
    public let hostTSCKHz: Int

    public init(factor: DilationFactor, hostTSCKHz: Int) throws {
        let advertised = (Double(hostTSCKHz) * factor.value).rounded()
        guard hostTSCKHz > 0, advertised <= Double(UInt32.max),
              Double(Self.lapicTimerKHz) * factor.value <= Double(UInt32.max) else {
            throw DilationError.unusableTSCFrequency(kHz: hostTSCKHz, factor: factor.value)
        }
        self.factor = factor
        self.hostTSCKHz = hostTSCKHz
    }

    /// The TSC frequency the guest is told, in kHz.
    public var advertisedTSCKHz: Int { Int((Double(hostTSCKHz) * factor.value).rounded()) }

    /// Words for a booting guest's kernel command line.
    public var kernelCommandLineWords: [String] {
        ["tsc_early_khz=\(advertisedTSCKHz)", "no-kvmclock", "clocksource=tsc", "tsc=reliable"]
    }

    /// A vCPU's CPUID with kvmclock hidden, the real-frequency leaves emptied and the timing leaf set.
    public func adjustCPUID(_ entries: [CPUIDEntry]) -> [CPUIDEntry] {
        var adjusted: [CPUIDEntry] = entries.compactMap { original in
            var entry = original
            switch entry.function {
            case Self.timingLeaf:
                return nil
            case Self.hypervisorBaseLeaf:
                entry.eax = max(entry.eax, Self.timingLeaf)
            case Self.kvmFeaturesLeaf:
                entry.eax &= ~Self.kvmclockFeatureBits
            case let function where Self.frequencyLeaves.contains(function):
                entry.eax = 0
                entry.ebx = 0
                entry.ecx = 0
                entry.edx = 0
            default:
                break
            }
            return entry
        }
        if !adjusted.contains(where: { $0.function == Self.hypervisorBaseLeaf }) {
            // KVM always lists its signature leaf; without it, state one so the timing leaf is reachable.
            adjusted.append(CPUIDEntry(function: Self.hypervisorBaseLeaf, eax: Self.timingLeaf,
                                       ebx: 0x4b4d_564b, ecx: 0x564b_4d56, edx: 0x4d))  // "KVMKVMKVM\0\0\0"
        }
        adjusted.append(CPUIDEntry(function: Self.timingLeaf, eax: UInt32(advertisedTSCKHz),
                                   ebx: UInt32((Double(Self.lapicTimerKHz) * factor.value).rounded()),
                                   ecx: UInt32((factor.value * 1000).rounded())))
        return adjusted
    }

    /// The factor a snapshot's guest was told (1 when its CPUID has no dilation record).
    public static func factor(ofSnapshotCPUID entries: [CPUIDEntry]) -> Double {
        guard let leaf = entries.first(where: { $0.function == timingLeaf }), leaf.ecx > 0 else { return 1 }
        return Double(leaf.ecx) / 1000
    }

    /// Checks that a snapshot may resume under `factor`: its guest keeps the TSC frequency it was
    /// told, so only the factor it was taken with keeps its time dilated as before.
    public static func checkResume(_ restore: RestorePlan, factor: DilationFactor) throws {
        let taken = Self.factor(ofSnapshotCPUID: restore.state.vcpus.first?.cpuidEntries ?? [])
        guard abs(taken - factor.value) < 0.0005 else {
            throw DilationError.resumeUnderAnotherFactor(snapshot: taken, requested: factor.value)
        }
    }

    /// A CMOS RTC that reads `wallStart` (seconds since the epoch; the host's wall time now) plus
    /// the dilated time since this call.
    public func wallClock(startingAt wallStart: Double = Self.hostWallSeconds(),
                          source: some HostTimeSource = MonotonicHostTime()) -> CMOSClock {
        let clock = DilatedClock(factor: factor, source: source)
        return CMOSClock(now: { wallStart + Double(clock.guestNanoseconds()) / 1e9 })
    }

    public static func hostWallSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// Dilates a machine: a boot gets the command-line words, the CPUID edits and the RTC; a restore
    /// is checked against the factor its snapshot was taken with (its CPUID comes from the
    /// snapshot) and gets the RTC back, whose saved state the snapshot holds.
    public func apply(to configuration: inout MachineConfiguration) throws {
        configuration.devices.append(wallClock())
        if let restore = configuration.restore {
            try Self.checkResume(restore, factor: factor)
            return
        }
        configuration.commandLine = ([configuration.commandLine] + kernelCommandLineWords).filter { !$0.isEmpty }.joined(separator: " ")
        let previous = configuration.cpuidAdjustment
        configuration.cpuidAdjustment = { [self] entries in adjustCPUID(previous?(entries) ?? entries) }
    }

    /// The plan for `factor` on this host (asks KVM for the vCPU TSC frequency).
    public static func onThisHost(factor: DilationFactor) throws -> DilatedTimekeeping {
        try DilatedTimekeeping(factor: factor, hostTSCKHz: try KVMSystem().guestTSCKHz())
    }
}
