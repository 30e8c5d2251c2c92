import CKVM
import Foundation

/// VM-wide kernel state: the in-kernel PIC pair and IOAPIC, the PIT, and kvmclock.
public struct PlatformState: Codable, Sendable, Equatable {
    /// KVM_GET_IRQCHIP for PIC master, PIC slave, IOAPIC, in that order.
    public var irqchips: [Data]
    public var pit: Data
    public var clock: Data

    static func capture(_ machine: VirtualMachine) throws -> PlatformState {
        PlatformState(irqchips: try VirtualMachine.irqchipIDs.map { KernelBlob.encode(try machine.irqchip($0)) },
                      pit: KernelBlob.encode(try machine.pit()),
                      clock: KernelBlob.encode(try machine.clock()))
    }

    func validate() throws {
        guard irqchips.count == VirtualMachine.irqchipIDs.count else {
            throw HypervisorError.invalidSnapshot("expected \(VirtualMachine.irqchipIDs.count) interrupt controller states, found \(irqchips.count)")
        }
        for (offset, chip) in irqchips.enumerated() {
            let decoded = try KernelBlob.decode(chip, as: kvm_irqchip.self, field: "interrupt controller \(offset)")
            guard decoded.chip_id == VirtualMachine.irqchipIDs[offset] else {
                throw HypervisorError.invalidSnapshot("interrupt controller \(offset) has chip id \(decoded.chip_id)")
            }
        }
        _ = try KernelBlob.decode(pit, as: kvm_pit_state2.self, field: "PIT")
        _ = try KernelBlob.decode(clock, as: kvm_clock_data.self, field: "kvmclock")
    }

    /// Loads the state into a VM whose irqchip and PIT exist (`createPlatformDevices`).
    func apply(to machine: VirtualMachine) throws {
        try validate()
        try machine.setPIT(try KernelBlob.decode(pit, as: kvm_pit_state2.self, field: "PIT"))
        try machine.setClock(try KernelBlob.decode(clock, as: kvm_clock_data.self, field: "kvmclock"))
        for chip in irqchips { try machine.setIRQChip(try KernelBlob.decode(chip, as: kvm_irqchip.self, field: "interrupt controller")) }
    }
}
