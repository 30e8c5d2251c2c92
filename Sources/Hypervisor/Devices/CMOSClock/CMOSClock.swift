import Foundation

/// The PC's CMOS real-time clock (Motorola MC146818A at ports 0x70/0x71): the wall-clock time a
/// guest reads at boot, from a time source the VMM chooses, so a time-dilated guest can be given
/// dilated wall time (Dilation) instead of none. Time registers in BCD or binary and 12- or 24-hour
/// form as register B says, the 114 bytes of CMOS RAM, and writes that set the clock (kept as an
/// offset from the source). No alarm, periodic or update interrupts: register C never flags one
/// and the update-in-progress bit is never set.
public final class CMOSClock: BusDevice, CodableStateDevice, MachineDevice {
    public static let deviceID = "cmos-rtc"
    public static let basePort: UInt64 = 0x70
    public static let windowLength: UInt64 = 2
    // Register indices and bits (MC146818A data sheet; the PC's century byte at 0x32).
    static let seconds = 0x00, minutes = 0x02, hours = 0x04, weekday = 0x06, day = 0x07, month = 0x08, year = 0x09
    static let registerA = 0x0a, registerB = 0x0b, registerC = 0x0c, registerD = 0x0d, century = 0x32
    /// 32.768 kHz time base (divider 010), rate bits 0110: what a PC's firmware leaves.
    static let registerADefault: UInt8 = 0x26
    static let binaryMode: UInt8 = 0x04
    static let twentyFourHour: UInt8 = 0x02
    /// SET: the guest is writing the time; reads still see it running here.
    static let setBit: UInt8 = 0x80
    /// Register D: valid RAM and time.
    static let validRAMAndTime: UInt8 = 0x80
    static let pmBit: UInt8 = 0x80

    /// Seconds since the Unix epoch (UTC) the guest should read now.
    private let now: @Sendable () -> Double
    public struct State: Codable, Sendable, Equatable {
        /// The register the next data-port access reaches, and the NMI-disable bit written with it.
        public var index: UInt8 = 0
        /// Registers and CMOS RAM (0x0e-0x7f); time registers are computed, not stored.
        public var ram: [UInt8] = [UInt8](repeating: 0, count: 128)
        /// Seconds the guest moved its clock away from the source by writing time registers.
        public var offsetSeconds: Int64 = 0
    }
    private let state: Locked<State>

    public init(now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.now = now
        var initial = State()
        initial.ram[Self.registerA] = Self.registerADefault
        initial.ram[Self.registerB] = Self.twentyFourHour
        initial.ram[Self.registerD] = Self.validRAMAndTime
        state = Locked(initial)
    }

    public func attach(to devices: DeviceManager) throws {
        try devices.addPortDevice(self, id: Self.deviceID, port: Self.basePort, length: Self.windowLength)
    }

    public var stateKind: String { "cmos-rtc" }
    public func snapshot() -> State { state.withLock { $0 } }
    public func restore(_ saved: State) throws {
        guard saved.ram.count == 128 else {
            throw HypervisorError.invalidSnapshot("cmos-rtc state: ram must hold 128 bytes, has \(saved.ram.count)")
        }
        state.withLock { $0 = saved }
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        let value: UInt8 = state.withLock { state in
            guard offset == 1 else { return 0xff }   // the index port is write-only
            let register = Int(state.index & 0x7f)
            if let time = timeRegister(register, state: state) { return time }
            return state.ram[register]
        }
        data.storeLittleEndian(UInt64(value))
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        state.withLock { state in
            if offset == 0 {
                state.index = value
                return
            }
            let register = Int(state.index & 0x7f)
            switch register {
            case Self.seconds, Self.minutes, Self.hours, Self.weekday, Self.day, Self.month, Self.year, Self.century:
                setTimeRegister(register, to: value, state: &state)
            case Self.registerA:
                state.ram[register] = value & 0x7f   // UIP is read-only
            case Self.registerC, Self.registerD:
                break                                // read-only
            default:
                state.ram[register] = value
            }
        }
    }

    /// The broken-down time the guest sees now.
    func currentTime(_ state: State) -> CivilTime {
        CivilTime(unixSeconds: Int64(now().rounded(.down)) + state.offsetSeconds)
    }

    private func timeRegister(_ register: Int, state: State) -> UInt8? {
        let time = currentTime(state)
        let binary = state.ram[Self.registerB] & Self.binaryMode != 0
        func encode(_ value: Int) -> UInt8 { binary ? UInt8(value) : UInt8((value / 10) << 4 | value % 10) }
        switch register {
        case Self.seconds: return encode(time.second)
        case Self.minutes: return encode(time.minute)
        case Self.hours:
            if state.ram[Self.registerB] & Self.twentyFourHour != 0 { return encode(time.hour) }
            let twelve = time.hour % 12 == 0 ? 12 : time.hour % 12
            return encode(twelve) | (time.hour >= 12 ? Self.pmBit : 0)
        case Self.weekday: return encode(time.weekday)
        case Self.day: return encode(time.day)
        case Self.month: return encode(time.month)
        case Self.year: return encode(time.year % 100)
        case Self.century: return encode(time.year / 100)
        default: return nil
        }
    }

    /// A write to a time register sets that field of the guest's clock: the offset from the source
    /// moves so that the field reads back as written, the others keep running.
    private func setTimeRegister(_ register: Int, to raw: UInt8, state: inout State) {
        let binary = state.ram[Self.registerB] & Self.binaryMode != 0
        func decode(_ value: UInt8) -> Int { binary ? Int(value) : Int(value >> 4) * 10 + Int(value & 0x0f) }
        var time = currentTime(state)
        switch register {
        case Self.seconds: time.second = min(decode(raw), 59)
        case Self.minutes: time.minute = min(decode(raw), 59)
        case Self.hours:
            if state.ram[Self.registerB] & Self.twentyFourHour != 0 {
                time.hour = min(decode(raw), 23)
            } else {
                let twelve = min(max(decode(raw & 0x7f), 1), 12) % 12
                time.hour = twelve + (raw & Self.pmBit != 0 ? 12 : 0)
            }
        case Self.day: time.day = min(max(decode(raw), 1), 31)
        case Self.month: time.month = min(max(decode(raw), 1), 12)
        case Self.year: time.year = time.year / 100 * 100 + min(decode(raw), 99)
        case Self.century: time.year = min(decode(raw), 99) * 100 + time.year % 100
        default: return   // the weekday follows from the date
        }
        state.offsetSeconds = time.unixSeconds - Int64(now().rounded(.down))
    }
}

/// A UTC date and time, converted to and from seconds since the Unix epoch with the proleptic
/// Gregorian calendar (days-from-civil arithmetic; no time zones, no leap seconds).
struct CivilTime: Equatable {
    var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int

    /// 1 (Sunday) to 7, as the RTC counts.
    var weekday: Int {
        let days = Self.days(year: year, month: month, day: day)
        return Int(((days % 7) + 7 + 4) % 7) + 1   // 1970-01-01 was a Thursday
    }

    init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
    }

    init(unixSeconds: Int64) {
        let days = unixSeconds >= 0 ? unixSeconds / 86_400 : (unixSeconds - 86_399) / 86_400
        let rest = Int(unixSeconds - days * 86_400)
        (hour, minute, second) = (rest / 3600, rest / 60 % 60, rest % 60)
        // Civil from days (era of 400 years, March-based year).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        day = Int(dayOfYear - (153 * monthIndex + 2) / 5 + 1)
        month = Int(monthIndex < 10 ? monthIndex + 3 : monthIndex - 9)
        year = Int(yearOfEra + era * 400) + (month <= 2 ? 1 : 0)
    }

    var unixSeconds: Int64 {
        Self.days(year: year, month: month, day: day) * 86_400 + Int64(hour * 3600 + minute * 60 + second)
    }

    /// Days since 1970-01-01 of a date (a day past the month's end rolls into the next month).
    static func days(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let monthIndex = Int64(month > 2 ? month - 3 : month + 9)
        let dayOfYear = (153 * monthIndex + 2) / 5 + Int64(day) - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
