/// An Intel MultiProcessor Specification 1.4 table: how a guest without ACPI learns how many CPUs
/// it has, where the IOAPIC is, and how ISA IRQs are wired to it. Linux finds the floating pointer by
/// scanning the first KiB of the EBDA (MP spec §4).
public struct MPTable: Sendable {
    static let floatingSignature = Array("_MP_".utf8)
    static let configurationSignature = Array("PCMP".utf8)
    /// MP spec revision 1.4.
    static let specificationRevision: UInt8 = 4
    static let floatingPointerLength = 16
    static let headerLength = 44
    // Entry types and sizes (MP spec §4.3, Table 4-3).
    static let processorEntry: UInt8 = 0
    static let busEntry: UInt8 = 1
    static let ioAPICEntry: UInt8 = 2
    static let ioInterruptEntry: UInt8 = 3
    static let localInterruptEntry: UInt8 = 4
    static let processorEnabled: UInt8 = 1
    static let processorBootstrap: UInt8 = 2
    /// Local APIC version for an integrated xAPIC (SDM Vol. 3A §10.4.8) and the 82093AA IOAPIC version.
    static let localAPICVersion: UInt8 = 0x14
    static let ioAPICVersion: UInt8 = 0x11
    /// Interrupt types: INT (vectored), NMI, ExtINT (MP spec Table 4-9).
    static let interruptTypeINT: UInt8 = 0
    static let interruptTypeNMI: UInt8 = 1
    static let interruptTypeExtINT: UInt8 = 3
    /// Pins of the KVM in-kernel IOAPIC (KVM_IOAPIC_NUM_PINS).
    static let ioAPICPins = 24
    /// CPU signature family 6 and the FPU + APIC feature bits, as firmware reports them.
    static let cpuSignature: UInt32 = 0x600
    static let cpuFeatures: UInt32 = (1 << 0) | (1 << 9)

    public let bytes: [UInt8]

    /// The table for `vcpuCount` CPUs, laid out to be copied to `address`.
    public init(vcpuCount: Int, address: UInt64 = GuestLayout.ebdaStart) {
        let ioAPICID = UInt8(vcpuCount) // after the CPUs' APIC IDs
        var entries: [UInt8] = []
        for cpu in 0..<vcpuCount {
            entries += [Self.processorEntry, UInt8(cpu), Self.localAPICVersion,
                        Self.processorEnabled | (cpu == 0 ? Self.processorBootstrap : 0)]
            entries += Self.littleEndian(Self.cpuSignature) + Self.littleEndian(Self.cpuFeatures) + [UInt8](repeating: 0, count: 8)
        }
        entries += [Self.busEntry, 0] + Array("ISA   ".utf8)
        entries += [Self.ioAPICEntry, ioAPICID, Self.ioAPICVersion, 1] + Self.littleEndian(GuestLayout.ioAPICAddress)
        for pin in 0..<Self.ioAPICPins {
            // ISA IRQ n → IOAPIC pin n; flags 0 = bus-default polarity and trigger (edge, high).
            entries += [Self.ioInterruptEntry, Self.interruptTypeINT, 0, 0, 0, UInt8(pin), ioAPICID, UInt8(pin)]
        }
        entries += [Self.localInterruptEntry, Self.interruptTypeExtINT, 0, 0, 0, 0, 0xff, 0]
        entries += [Self.localInterruptEntry, Self.interruptTypeNMI, 0, 0, 0, 0, 0xff, 1]
        let entryCount = vcpuCount + 1 + 1 + Self.ioAPICPins + 2

        let headerAddress = address + UInt64(Self.floatingPointerLength)
        var floating = Self.floatingSignature + Self.littleEndian(UInt32(headerAddress))
        floating += [1, Self.specificationRevision, 0, 0, 0, 0, 0, 0] // length in 16-byte units, rev, checksum, features
        floating[10] = Self.checksum(floating)

        var header = Self.configurationSignature
        header += Self.littleEndian(UInt16(Self.headerLength + entries.count)) + [Self.specificationRevision, 0]
        header += Array("STREAMVM".utf8) + Array("VMM         ".utf8)
        header += Self.littleEndian(UInt32(0)) + Self.littleEndian(UInt16(0)) + Self.littleEndian(UInt16(entryCount))
        header += Self.littleEndian(GuestLayout.localAPICAddress) + Self.littleEndian(UInt16(0)) + [0, 0]
        var table = header + entries
        table[7] = Self.checksum(table)
        bytes = floating + table
    }

    static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    /// The byte that makes the sum of all bytes zero (MP spec §4.1, §4.2 "CHECKSUM").
    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        UInt8(truncatingIfNeeded: 0 &- bytes.reduce(UInt8(0), &+))
    }
}
