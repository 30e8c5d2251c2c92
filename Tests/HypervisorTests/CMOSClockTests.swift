import Foundation
import Synchronization
import Testing
@testable import Hypervisor

/// The CMOS RTC as a guest drives it through ports 0x70/0x71, on a clock the test sets.
@Suite struct CMOSClockTests {
    /// 2026-12-06 15:04:05 UTC, a Sunday.
    static let sundayAfternoon = 1_796_569_445.0

    final class Clock: Sendable {
        let seconds = Mutex(CMOSClockTests.sundayAfternoon)
        var now: @Sendable () -> Double { { self.seconds.withLock { $0 } } }
    }

    static func read(_ device: CMOSClock, _ register: UInt8) -> UInt8 {
        [register].withUnsafeBytes { device.write(offset: 0, from: $0) }
        var value: UInt8 = 0
        withUnsafeMutableBytes(of: &value) { device.read(offset: 1, into: $0) }
        return value
    }

    static func write(_ device: CMOSClock, _ register: UInt8, _ value: UInt8) {
        [register].withUnsafeBytes { device.write(offset: 0, from: $0) }
        [value].withUnsafeBytes { device.write(offset: 1, from: $0) }
    }

    @Test func aGuestReadsTheTimeIn24HourBCDAsFirmwareLeavesIt() {
        let device = CMOSClock(now: Clock().now)
        let fields: [UInt8] = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map { Self.read(device, $0) }
        #expect(fields == [0x05, 0x04, 0x15, 0x01, 0x06, 0x12, 0x26, 0x20])
        #expect(Self.read(device, 0x0a) & 0x80 == 0, "never update-in-progress")
        #expect(Self.read(device, 0x0d) == 0x80, "valid RAM and time")
        #expect(Self.read(device, 0x8b) == 0x02, "the NMI-disable bit in the index does not change the register")
    }

    @Test func binaryAnd12HourModesFollowRegisterB() {
        let device = CMOSClock(now: Clock().now)
        Self.write(device, 0x0b, 0x04)   // binary, 12-hour
        #expect(Self.read(device, 0x04) == 0x80 | 3, "3 PM")
        #expect(Self.read(device, 0x09) == 26 && Self.read(device, 0x02) == 4)
        Self.write(device, 0x0b, 0x06)   // binary, 24-hour
        #expect(Self.read(device, 0x04) == 15)
    }

    @Test func writingATimeRegisterSetsThatFieldAndTheClockRunsOn() {
        let clock = Clock()
        let device = CMOSClock(now: clock.now)
        Self.write(device, 0x04, 0x09)   // 09 h, BCD
        Self.write(device, 0x09, 0x30)   // year 2030
        clock.seconds.withLock { $0 += 70 }
        #expect(Self.read(device, 0x04) == 0x09 && Self.read(device, 0x09) == 0x30)
        #expect(Self.read(device, 0x02) == 0x05 && Self.read(device, 0x00) == 0x15, "15:04:05 + 70 s → 09:05:15 after the hour was set")
        #expect(Self.read(device, 0x07) == 0x06 && Self.read(device, 0x08) == 0x12)
    }

    @Test func cmosRAMKeepsBytesAndTheStateSurvivesASnapshot() throws {
        let clock = Clock()
        let device = CMOSClock(now: clock.now)
        Self.write(device, 0x40, 0x5a)
        Self.write(device, 0x04, 0x21)
        Self.write(device, 0x0d, 0x00)   // read-only
        let saved = try device.saveState()
        let restored = CMOSClock(now: clock.now)
        try restored.restoreState(saved)
        #expect(Self.read(restored, 0x40) == 0x5a && Self.read(restored, 0x04) == 0x21 && Self.read(restored, 0x0d) == 0x80)
        #expect(throws: HypervisorError.self) { try restored.restoreState(Data(#"{"index":0,"offsetSeconds":0,"ram":[1,2]}"#.utf8)) }
    }

    @Test func civilTimeRoundTripsAcrossLeapDaysAndCenturies() {
        #expect(CivilTime(unixSeconds: 0) == CivilTime(year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0))
        #expect(CivilTime(unixSeconds: 0).weekday == 5, "a Thursday")
        #expect(CivilTime(unixSeconds: 951_782_400) == CivilTime(year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0))
        #expect(CivilTime(unixSeconds: 4_107_542_400) == CivilTime(year: 2100, month: 3, day: 1, hour: 0, minute: 0, second: 0))
        #expect(CivilTime(unixSeconds: -1) == CivilTime(year: 1969, month: 12, day: 31, hour: 23, minute: 59, second: 59))
        for seconds in stride(from: Int64(-86_400 * 400), to: Int64(4_200_000_000), by: 7_777_777) {
            #expect(CivilTime(unixSeconds: seconds).unixSeconds == seconds)
        }
    }

    @Test func theFADTSaysWhetherThereIsAnRTCAndWhereItsCenturyIs() {
        let without = ACPITables(vcpuCount: 1).fadt
        let with = ACPITables(vcpuCount: 1, cmosClock: true).fadt
        #expect(without[109] & (1 << 5) != 0 && without[108] == 0)
        #expect(with[109] & (1 << 5) == 0 && with[108] == 0x32)
    }
}
