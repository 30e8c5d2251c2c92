/// The hardware-reduced ACPI sleep control and status registers (ACPI 6.4 §4.8.3.7, §4.8.3.8).
/// Writing SLP_TYP = `\_S5`'s value with SLP_EN set is the guest's ACPI power off.
public final class SleepControl: BusDevice {
    /// Two one-byte ports: control, then status.
    public static let windowLength: UInt64 = 2
    /// SLEEP_CONTROL_REG fields: SLP_TYPx in bits 2-4, SLP_EN in bit 5.
    static let sleepTypeShift: UInt8 = 2
    static let sleepTypeMask: UInt8 = 0x7
    static let sleepEnable: UInt8 = 1 << 5

    private let requestPowerOff: @Sendable () -> Void

    public init(requestPowerOff: @escaping @Sendable () -> Void) {
        self.requestPowerOff = requestPowerOff
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        data.storeLittleEndian(0) // status: no wake events
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard offset == 0, let value = data.first, value & Self.sleepEnable != 0 else { return }
        if (value >> Self.sleepTypeShift) & Self.sleepTypeMask == ACPITables.softOffSleepType { requestPowerOff() }
    }
}
