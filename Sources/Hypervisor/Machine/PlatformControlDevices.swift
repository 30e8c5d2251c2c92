/// The PC platform's control ports every machine has: the i8042 reset line, the ACPI sleep control
/// registers (power off) and the power-off port test guests use. Each one ends the run.
struct PlatformControlDevices: MachineDevice {
    func attach(to devices: DeviceManager) throws {
        let stop = devices.requestStop
        try devices.addPortDevice(I8042(requestReset: { stop(.reboot) }),
                                  id: "i8042", port: I8042.basePort, length: I8042.windowLength)
        try devices.addPortDevice(SleepControl(requestPowerOff: { stop(.powerOff(code: 0)) }),
                                  id: "acpi-sleep", port: UInt64(ACPITables.sleepControlPort), length: SleepControl.windowLength)
        try devices.addPortDevice(PowerOffPort(requestPowerOff: { stop(.powerOff(code: $0)) }),
                                  id: "power-off", port: PowerOffPort.port, length: PowerOffPort.windowLength)
    }
}
