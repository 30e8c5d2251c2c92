import Dilation
import Hypervisor
import Testing

/// The host holds a dilated guest's disk to rate ÷ TDF and adds latency × TDF.
@Suite struct DilatedDiskTests {
    @Test func rateIsDividedAndLatencyMultipliedByTheFactor() throws {
        let disk = DilatedDisk(perceivedBytesPerSecond: 200_000_000, perceivedLatencyMilliseconds: 0.5, factor: try DilationFactor(10))
        #expect(disk.realLimit == DiskLimit(bytesPerSecond: 20_000_000, requestLatencySeconds: 0.005))
        let fractional = DilatedDisk(perceivedBytesPerSecond: 10_000_000, factor: try DilationFactor(1.5))
        #expect(fractional.realLimit.bytesPerSecond == 6_666_667)
        #expect(DilatedDisk(perceivedBytesPerSecond: 3, factor: try DilationFactor(1000)).realLimit.bytesPerSecond == 1, "never below 1 byte/s")
    }

    @Test func anUnlimitedDiskStaysUnlimitedAndNoDilationChangesNothing() throws {
        #expect(DilatedDisk(perceivedBytesPerSecond: nil, factor: try DilationFactor(4)).realLimit.isUnlimited)
        #expect(DilatedDisk(perceivedBytesPerSecond: 12_345, perceivedLatencyMilliseconds: 7, factor: .none).realLimit
                == DiskLimit(bytesPerSecond: 12_345, requestLatencySeconds: 0.007))
    }
}
