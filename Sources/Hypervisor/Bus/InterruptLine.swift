/// Something a device pulls to interrupt the guest. On a running machine it is a GSI of the
/// in-kernel IOAPIC; in tests any conforming type can count the edges.
public protocol InterruptLine: Sendable {
    func trigger()
}

/// An edge on GSI `gsi` of the VM's in-kernel irqchip.
public struct IRQChipLine: InterruptLine {
    public let gsi: UInt32
    let machine: VirtualMachine

    public init(gsi: UInt32, machine: VirtualMachine) {
        self.gsi = gsi
        self.machine = machine
    }

    public func trigger() {
        // KVM_IRQ_LINE only fails for an invalid GSI, which the machine layout rules out.
        try? machine.pulseInterrupt(gsi)
    }
}
