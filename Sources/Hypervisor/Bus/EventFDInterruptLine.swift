/// An edge on a GSI raised through an irqfd: one eventfd write instead of two KVM_IRQ_LINE ioctls,
/// and callable from any thread (device I/O threads included) without touching a vCPU.
public struct EventFDInterruptLine: InterruptLine {
    public let gsi: UInt32
    let event: EventFD

    /// Registers a new eventfd as `gsi`'s irqfd on `machine`.
    public init(gsi: UInt32, machine: VirtualMachine) throws {
        let event = try EventFD()
        try machine.attachInterrupt(event, gsi: gsi)
        self.gsi = gsi
        self.event = event
    }

    public func trigger() {
        event.signal()
    }
}
