import Dilation
import Hypervisor
import Testing

/// The CPUID and command line a dilated guest is given, and the resume rule, without a VM.
@Suite struct DilatedTimekeepingTests {
    /// A KVM-like table: basic leaves, the frequency leaves, KVM's signature and feature leaves.
    static let supported: [CPUIDEntry] = [
        CPUIDEntry(function: 0, eax: 0x16),
        CPUIDEntry(function: 0x15, eax: 2, ebx: 184, ecx: 19_200_000),
        CPUIDEntry(function: 0x16, eax: 2445, ebx: 3000, ecx: 100),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4b4d_564b, ecx: 0x564b_4d56, edx: 0x4d),
        CPUIDEntry(function: 0x4000_0001, eax: (1 << 0) | (1 << 3) | (1 << 24) | (1 << 4)),
    ]

    @Test func kvmclockIsHiddenAndTheGuestIsToldTheDilatedFrequency() throws {
        let plan = try DilatedTimekeeping(factor: try DilationFactor(2.5), hostTSCKHz: 2_445_424)
        #expect(plan.advertisedTSCKHz == 6_113_560)
        let table = plan.adjustCPUID(Self.supported)
        let leaf = { (function: UInt32) in table.filter { $0.function == function } }
        #expect(leaf(0x4000_0001).first?.eax == 1 << 4, "kvmclock bits cleared, other KVM features kept")
        #expect(leaf(0x4000_0000).first?.eax == 0x4000_0010, "the timing leaf is reachable")
        #expect(leaf(0x15).first.map { $0.eax | $0.ebx | $0.ecx | $0.edx } == 0, "no real crystal frequency")
        #expect(leaf(0x16).first.map { $0.eax | $0.ebx | $0.ecx | $0.edx } == 0, "no real base frequency")
        let timing = try #require(leaf(0x4000_0010).first)
        #expect(leaf(0x4000_0010).count == 1)
        #expect(timing.eax == 6_113_560 && timing.ebx == 2_500_000 && timing.ecx == 2500)
        #expect(DilatedTimekeeping.factor(ofSnapshotCPUID: table) == 2.5)
        #expect(DilatedTimekeeping.factor(ofSnapshotCPUID: Self.supported) == 1, "no record: not dilated")
        // Adjusting twice (a snapshot's table) replaces the leaf rather than adding a second.
        #expect(plan.adjustCPUID(table).filter { $0.function == 0x4000_0010 }.count == 1)
        #expect(plan.kernelCommandLineWords == ["tsc_early_khz=6113560", "no-kvmclock", "clocksource=tsc", "tsc=reliable"])
    }

    @Test func aTableWithoutKVMsSignatureGetsOne() throws {
        let plan = try DilatedTimekeeping(factor: try DilationFactor(3), hostTSCKHz: 1_000_000)
        let table = plan.adjustCPUID([CPUIDEntry(function: 0, eax: 1)])
        #expect(table.first { $0.function == 0x4000_0000 }?.eax == 0x4000_0010)
        #expect(table.first { $0.function == 0x4000_0010 }?.eax == 3_000_000)
    }

    @Test func frequenciesThatDoNotFitAreRefusedWithTheFigures() throws {
        #expect(throws: DilationError.unusableTSCFrequency(kHz: 5_000_000, factor: 1000)) {
            try DilatedTimekeeping(factor: try DilationFactor(1000), hostTSCKHz: 5_000_000)
        }
        #expect(throws: DilationError.unusableTSCFrequency(kHz: 0, factor: 2)) {
            try DilatedTimekeeping(factor: try DilationFactor(2), hostTSCKHz: 0)
        }
        #expect(throws: DilationError.invalidFactor(0.5)) { try DilationFactor(0.5) }
        #expect(DilationError.resumeUnderAnotherFactor(snapshot: 2, requested: 3).description.contains("--tdf 2.0"))
    }
}
