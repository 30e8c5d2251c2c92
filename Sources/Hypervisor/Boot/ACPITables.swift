/// Minimal ACPI tables for a hardware-reduced platform (ACPI 6.4 §4.1 "Hardware-Reduced ACPI"):
/// RSDP → XSDT → FADT (→ DSDT) and MADT. They give Linux the CPU list (MADT), a way to power off
/// (the FADT sleep control register plus `\_S5` in the DSDT) and to reboot (the FADT reset register,
/// pointed at the i8042 pulse-reset command).
public struct ACPITables: Sendable {
    /// Linux looks for the RSDP on 16-byte boundaries in the BIOS area 0xe0000-0xfffff (ACPI 6.4 §5.2.5.1).
    public static let rsdpAddress: UInt64 = 0xe0000
    static let xsdtAddress: UInt64 = 0xe0040
    static let fadtAddress: UInt64 = 0xe0100
    static let madtAddress: UInt64 = 0xe0300
    static let dsdtAddress: UInt64 = 0xe1000
    /// Size of the area the tables occupy (reserved in the e820 map).
    public static let areaLength: UInt64 = 0x20000

    /// I/O ports of the hardware-reduced sleep registers (our choice; FADT tells the guest).
    public static let sleepControlPort: UInt16 = 0x600
    public static let sleepStatusPort: UInt16 = 0x601
    /// The sleep type `\_S5` reports; the guest writes it back with SLP_EN to power off.
    public static let softOffSleepType: UInt8 = 5

    static let oemID = Array("STRMVM".utf8)
    static let oemTableID = Array("STREAMVM".utf8)
    static let creatorID = Array("SVMM".utf8)
    /// FADT flags (ACPI 6.4 Table 5.10): RESET_REG_SUP (bit 10), HW_REDUCED_ACPI (bit 20).
    static let fadtFlags: UInt32 = (1 << 10) | (1 << 20)
    /// IAPC_BOOT_ARCH (Table 5.11): 8042 present (bit 1), VGA not present (bit 2), and CMOS RTC not
    /// present (bit 5) unless the machine has a `CMOSClock`: without one, guests take wall-clock
    /// time from kvm-clock.
    static let bootArchitectureFlags: UInt16 = (1 << 1) | (1 << 2)
    static let noCMOSClockFlag: UInt16 = 1 << 5
    /// FADT revision 6 and its length (Table 5.9).
    static let fadtRevision: UInt8 = 6
    static let fadtLength = 276
    /// MADT flags: PCAT_COMPAT, dual 8259s present (Table 5.20) — KVM's in-kernel PIC.
    static let madtPCATCompatible: UInt32 = 1
    /// Generic Address Structure address space: system I/O (Table 5.1).
    static let systemIOSpace: UInt8 = 1

    public let rsdp: [UInt8]
    public let xsdt: [UInt8]
    public let fadt: [UInt8]
    public let madt: [UInt8]
    public let dsdt: [UInt8]

    /// An MMIO device window announced in the DSDT. Virtio-mmio windows carry the ACPI ID Linux's
    /// virtio_mmio driver matches ("LNRO0005", drivers/virtio/virtio_mmio.c), so kernels without
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (such as Debian's) still find them; other devices bring
    /// the ID their driver matches.
    public struct MMIODevice: Sendable, Equatable {
        public var address: UInt64
        public var length: UInt64
        /// The device's interrupt, when it has one.
        public var gsi: UInt32?
        public var hardwareID: String

        public init(address: UInt64, length: UInt64, gsi: UInt32?, hardwareID: String = ACPITables.virtioMMIOHardwareID) {
            self.address = address
            self.length = length
            self.gsi = gsi
            self.hardwareID = hardwareID
        }
    }

    public static let virtioMMIOHardwareID = "LNRO0005"

    /// `cmosClock`: the machine has a `CMOSClock` at ports 0x70/0x71 (the FADT then says so and
    /// names its century byte).
    public init(vcpuCount: Int, virtioDevices: [MMIODevice] = [], cmosClock: Bool = false) {
        dsdt = Self.table("DSDT", revision: 2, body: Self.softOffPackage + Self.deviceScope(virtioDevices))
        fadt = Self.makeFADT(cmosClock: cmosClock)
        madt = Self.makeMADT(vcpuCount: vcpuCount)
        xsdt = Self.table("XSDT", revision: 1, body: MPTable.littleEndian(Self.fadtAddress) + MPTable.littleEndian(Self.madtAddress))
        var rsdp = Array("RSD PTR ".utf8) + [0] + Self.oemID + [2] // revision 2: ACPI 2.0+
        rsdp += MPTable.littleEndian(UInt32(0)) + MPTable.littleEndian(UInt32(36)) + MPTable.littleEndian(Self.xsdtAddress) + [0, 0, 0, 0]
        rsdp[8] = MPTable.checksum(Array(rsdp[0..<20]))
        rsdp[32] = MPTable.checksum(rsdp)
        self.rsdp = rsdp
    }

    /// Every table with the guest-physical address it belongs at.
    public var placements: [(address: UInt64, bytes: [UInt8])] {
        [(Self.rsdpAddress, rsdp), (Self.xsdtAddress, xsdt), (Self.fadtAddress, fadt), (Self.madtAddress, madt), (Self.dsdtAddress, dsdt)]
    }

    /// AML for `Name (_S5, Package (2) { 5, 5 })` (ACPI 6.4 §20.2.5: NameOp 0x08, PackageOp 0x12,
    /// PkgLength, NumElements, BytePrefix 0x0a values).
    static var softOffPackage: [UInt8] {
        [0x08] + Array("_S5_".utf8) + [0x12, 0x06, 0x02, 0x0a, softOffSleepType, 0x0a, softOffSleepType]
    }

    /// The PNP ID of a 16550A-compatible COM port, which Linux's 8250_pnp driver matches.
    static let serialPortHardwareID = "PNP0501"

    /// `Device (COM1)` with its ports and interrupt. A hardware-reduced ACPI platform has no legacy
    /// (ISA) interrupts: Linux then maps no IRQ to IOAPIC pin 4 unless a device's _CRS names it, so
    /// without this the console works (polled writes) but tty output, which waits for the UART's
    /// transmit interrupt, never leaves the guest. QEMU's microvm describes COM1 the same way.
    static var serialPortDevice: [UInt8] {
        let resources = AML.ioPorts(base: UInt16(Serial8250.com1Port), length: UInt8(Serial8250.windowLength))
            + AML.extendedInterrupt(Serial8250.com1IRQ) + AML.endTag
        return AML.device("COM1", AML.name("_HID", AML.string(serialPortHardwareID)) + AML.name("_UID", AML.integer(1))
            + AML.name("_CRS", AML.buffer(resources)))
    }

    /// `Scope (\_SB) { Device (COM1) {...} Device (VRnn) { _HID, _UID, _CRS } ... Device (MDnn) ... }`:
    /// the console UART, the virtio-mmio windows (VRnn) and other MMIO devices (MDnn), each numbered
    /// (name and _UID) among devices of its kind in registration order.
    static func deviceScope(_ devices: [MMIODevice]) -> [UInt8] {
        var virtioCount = 0
        var otherCount = 0
        let body = serialPortDevice + devices.flatMap { device -> [UInt8] in
            var resources = AML.memory32Fixed(base: UInt32(device.address), length: UInt32(device.length))
            if let gsi = device.gsi { resources += AML.extendedInterrupt(gsi) }
            resources += AML.endTag
            let isVirtio = device.hardwareID == virtioMMIOHardwareID
            let index = isVirtio ? virtioCount : otherCount
            if isVirtio { virtioCount += 1 } else { otherCount += 1 }
            let name = (isVirtio ? "VR" : "MD") + String(index >> 4 & 0xf, radix: 16, uppercase: true) + String(index & 0xf, radix: 16, uppercase: true)
            return AML.device(name, AML.name("_HID", AML.string(device.hardwareID))
                + AML.name("_UID", AML.integer(UInt32(index))) + AML.name("_CRS", AML.buffer(resources)))
        }
        return AML.rootScope("_SB", body)
    }

    /// A System Description Table: the 36-byte header (§5.2.6) with its checksum, then `body`.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var bytes = Array(signature.utf8) + MPTable.littleEndian(UInt32(36 + body.count)) + [revision, 0]
        bytes += oemID + oemTableID + MPTable.littleEndian(UInt32(1)) + creatorID + MPTable.littleEndian(UInt32(1))
        bytes += body
        bytes[9] = MPTable.checksum(bytes)
        return bytes
    }

    /// A Generic Address Structure for a one-byte I/O port (Table 5.1).
    static func ioPort(_ port: UInt16) -> [UInt8] {
        [systemIOSpace, 8, 0, 1] + MPTable.littleEndian(UInt64(port))
    }

    static func makeFADT(cmosClock: Bool) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: fadtLength - 36)
        func put(_ bytes: [UInt8], at offset: Int) { body.replaceSubrange((offset - 36)..<(offset - 36 + bytes.count), with: bytes) }
        put(MPTable.littleEndian(UInt32(dsdtAddress)), at: 40) // DSDT
        put(MPTable.littleEndian(UInt16(9)), at: 46) // SCI_INT (unused when hardware-reduced)
        if cmosClock { put([UInt8(CMOSClock.century)], at: 108) } // CENTURY: CMOS index of the century byte
        put(MPTable.littleEndian(bootArchitectureFlags | (cmosClock ? 0 : noCMOSClockFlag)), at: 109)
        put(MPTable.littleEndian(fadtFlags), at: 112)
        put(ioPort(UInt16(I8042.basePort + I8042.commandOffset)), at: 116) // RESET_REG
        put([0xfe], at: 128) // RESET_VALUE: i8042 pulse reset
        put(MPTable.littleEndian(dsdtAddress), at: 140) // X_DSDT
        put(ioPort(sleepControlPort), at: 244) // SLEEP_CONTROL_REG
        put(ioPort(sleepStatusPort), at: 256) // SLEEP_STATUS_REG
        put(Array("STREAMVM".utf8), at: 268) // hypervisor vendor identity
        return table("FACP", revision: fadtRevision, body: body)
    }

    static func makeMADT(vcpuCount: Int) -> [UInt8] {
        var body = MPTable.littleEndian(GuestLayout.localAPICAddress) + MPTable.littleEndian(madtPCATCompatible)
        for cpu in 0..<vcpuCount {
            // Processor Local APIC (type 0, length 8): UID, APIC ID, flags = enabled (Table 5.23).
            body += [0, 8, UInt8(cpu), UInt8(cpu)] + MPTable.littleEndian(UInt32(1))
        }
        // I/O APIC (type 1, length 12): ID, reserved, address, global system interrupt base (Table 5.25).
        body += [1, 12, UInt8(vcpuCount), 0] + MPTable.littleEndian(GuestLayout.ioAPICAddress) + MPTable.littleEndian(UInt32(0))
        return table("APIC", revision: 4, body: body)
    }
}
