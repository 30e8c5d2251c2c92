import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// A device plugged in through `MachineConfiguration.devices` without touching `Machine`: it
/// records the POST codes the guest writes to port 0x80 (the test guest's first instruction is
/// `outb %al, $0x80`) and keeps them as snapshot state.
final class POSTCodeRecorder: BusDevice, CodableStateDevice, MachineDevice, @unchecked Sendable {
    /// The PC POST diagnostic port.
    static let port: UInt64 = 0x80
    let codes = Locked<[UInt8]>([])

    var stateKind: String { "post-code-recorder" }
    func snapshot() -> [UInt8] { codes.withLock { $0 } }
    func restore(_ saved: [UInt8]) throws { codes.withLock { $0 = saved } }

    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) { data.storeLittleEndian(0) }
    func write(offset: UInt64, from data: UnsafeRawBufferPointer) { codes.withLock { $0.append(data.first ?? 0) } }

    func attach(to devices: DeviceManager) throws {
        try devices.addPortDevice(self, id: "post", port: Self.port, length: 1)
    }
}

/// Takes an interrupt line and an MMIO window described in the DSDT, as a new non-virtio device would.
struct WindowedDevice: MachineDevice {
    /// An ACPI hardware ID for the test device (vendor prefix of four capitals, four hex digits).
    static let hardwareID = "STRM0001"
    let windows: Locked<[UInt64]>
    let gsis: Locked<[UInt32]>

    func attach(to devices: DeviceManager) throws {
        let recorder = POSTCodeRecorder()
        let gsi = try devices.allocateInterrupt().gsi
        gsis.withLock { $0.append(gsi) }
        try windows.withLock { $0.append(try devices.addMMIODevice(recorder, id: "window\($0.count)", acpiHardwareID: Self.hardwareID, gsi: gsi)) }
    }
}

/// A device whose register write asks the machine to pause — from the vCPU thread that wrote it.
final class PausingDevice: BusDevice, MachineDevice, @unchecked Sendable {
    let machine = Locked<Machine?>(nil)
    let outcome = Locked<String?>(nil)

    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) { data.storeLittleEndian(0) }
    func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard let machine = machine.withLock({ $0 }) else { return }
        do {
            try machine.pause()
            outcome.withLock { $0 = "paused" }
        } catch {
            outcome.withLock { $0 = "\(error)" }
        }
    }

    func attach(to devices: DeviceManager) throws {
        try devices.addPortDevice(self, id: "pauser", port: POSTCodeRecorder.port, length: 1)
    }
}

@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: device manager tests skipped"),
       .timeLimit(.minutes(3)), .offCooperativePool)
struct DeviceManagerTests {
    @Test func aDeviceFromTheConfigurationSeesTheGuestAndIsCounted() throws {
        let recorder = POSTCodeRecorder()
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=hello")
        configuration.devices = [recorder]
        let machine = try Machine(configuration: configuration, logger: Logger(label: "test-devices"))
        #expect(machine.run(timeout: .seconds(90)) == .powerOff(code: 0))
        #expect(recorder.codes.withLock { $0.count } == 1)
        #expect(machine.devices.deviceIDs == ["serial0", "i8042", "acpi-sleep", "power-off", "post"])
        #expect(machine.metrics().devices.first { $0.name == "post" }?.counters == DeviceCounters(requests: 1, bytesRead: 0, bytesWritten: 1))
    }

    @Test func windowsAndInterruptsAreHandedOutInOrderAfterTheDisks() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("disk.img")
        try Data(patternedDisk(sectors: 8)).write(to: URL(fileURLWithPath: path))
        let device = WindowedDevice(windows: Locked([]), gsis: Locked([]))
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .linux(kernel: [], initrd: nil),
                                                 disks: [try RawFileBackend(path: path, readOnly: true)])
        configuration.devices = [device, device]
        let devices = try DeviceManager.forTesting(configuration)
        #expect(device.windows.withLock { $0 } == [GuestLayout.virtioMMIOBase + 0x1000, GuestLayout.virtioMMIOBase + 0x2000])
        #expect(device.gsis.withLock { $0 } == [GuestLayout.virtioFirstGSI + 1, GuestLayout.virtioFirstGSI + 2])
        #expect(devices.kernelCommandLineWords == ["virtio_mmio.device=4K@0xd0000000:5"])
        #expect(devices.acpiDevices.map(\.gsi) == [5, 6, 7])
        #expect(devices.acpiDevices.map(\.hardwareID) == [ACPITables.virtioMMIOHardwareID, WindowedDevice.hardwareID, WindowedDevice.hardwareID])
        // The DSDT names virtio windows VRnn and the others MDnn, each with its own _HID.
        let dsdt = ACPITables(vcpuCount: 1, virtioDevices: devices.acpiDevices).dsdt
        for text in ["VR00", "MD00", "MD01", WindowedDevice.hardwareID, ACPITables.virtioMMIOHardwareID] {
            #expect(dsdt.firstRange(of: Array(text.utf8)) != nil, "\(text) missing from the DSDT")
        }
    }

    @Test func duplicateIDsAndRunningOutOfInterruptsAreErrors() throws {
        let devices = try DeviceManager.forTesting(MachineConfiguration(memorySize: 64 << 20, image: .flat([])))
        #expect { try devices.addPortDevice(POSTCodeRecorder(), id: "serial0", port: 0x80, length: 1) } throws: { "\($0)".contains("already taken") }
        #expect { try devices.addPortDevice(POSTCodeRecorder(), id: "overlap", port: Serial8250.com1Port, length: 1) } throws: { "\($0)".contains("overlaps") }
        for _ in GuestLayout.virtioFirstGSI...DeviceManager.lastGSI { _ = try devices.allocateInterrupt() }
        #expect { _ = try devices.allocateInterrupt() } throws: { "\($0)".contains("no interrupt line left") }
    }

    @Test func aDeviceCallbackCannotPauseItsOwnMachine() throws {
        let device = PausingDevice()
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=hello")
        configuration.devices = [device]
        let machine = try Machine(configuration: configuration, logger: Logger(label: "test-devices"))
        device.machine.withLock { $0 = machine }
        #expect(machine.run(timeout: .seconds(90)) == .powerOff(code: 0))
        #expect(device.outcome.withLock { $0 }?.contains("called on a vCPU thread") == true, "\(String(describing: device.outcome.withLock { $0 }))")
        device.machine.withLock { $0 = nil }
    }

    /// Device state travels with the snapshot under the device's id, and a machine without that
    /// device refuses it by name.
    @Test func pluggedInDeviceStateIsSavedAndRestoredByID() throws {
        let scratch = try ScratchDirectory()
        let recorder = POSTCodeRecorder()
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=spin")
        configuration.devices = [recorder]
        let machine = try Machine(configuration: configuration, logger: Logger(label: "test-devices"))
        try machine.start()
        #expect(waitForConsole(machine, "STREAMVM-READY"))
        try machine.pause()
        let snapshot = try machine.saveSnapshot(to: scratch.path)
        machine.stop(.stopRequested)
        _ = machine.waitUntilStopped(timeout: .seconds(30))
        #expect(snapshot.devices.first { $0.id == "post" } == DeviceStateRecord(id: "post", kind: "post-code-recorder", state: "[0]"))

        let restoredRecorder = POSTCodeRecorder()
        var restoring = MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: try RestorePlan.load(directory: scratch.path))
        restoring.devices = [restoredRecorder]
        _ = try Machine(configuration: restoring, logger: Logger(label: "test-devices"))
        #expect(restoredRecorder.codes.withLock { $0 } == [0])
        restoring.devices = []
        #expect { _ = try Machine(configuration: restoring, logger: Logger(label: "test-devices")) } throws: {
            "\($0)".contains("state for device \"post\" (post-code-recorder), which this machine does not have")
        }
    }
}

extension DeviceManager {
    /// A device manager built the way `Machine.init` builds one, on a fresh VM, without booting.
    static func forTesting(_ configuration: MachineConfiguration) throws -> DeviceManager {
        let system = try KVMSystem()
        let machine = try system.createVirtualMachine()
        try machine.createPlatformDevices()
        let memory = try GuestMemory(size: configuration.memorySize)
        let devices = DeviceManager(memory: memory, virtualMachine: machine, useEventFDs: configuration.useEventFDs,
                                    logger: Logger(label: "test-devices"), stop: { _ in })
        _ = try Machine.attachDevices(configuration, serial: Serial8250(interrupt: devices.legacyInterrupt(gsi: Serial8250.com1IRQ), output: { _ in }),
                                  to: devices)
        return devices
    }
}
