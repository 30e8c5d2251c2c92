/// Why a machine stopped running; each case maps to a distinct `streamvm run` exit status.
public enum StopReason: Equatable, Sendable, CustomStringConvertible {
    /// The guest powered off; `code` is what it wrote to the power-off port (0 = success).
    case powerOff(code: UInt8)
    /// The guest asked for a reset (i8042 pulse, or KVM system event).
    case reboot
    /// Triple fault: the guest's CPU state became unrecoverable.
    case tripleFault
    /// The guest stopped all CPUs with `hlt` and interrupts that can never arrive.
    case halted
    /// The host asked us to stop (Ctrl-C or a caller's `stop`).
    case stopRequested
    /// The run's time limit passed before the guest stopped.
    case timedOut
    /// The VMM could not continue (KVM error, failed emulation, invalid entry state).
    case failure(String)

    public var description: String {
        switch self {
        case let .powerOff(code): return "guest powered off (code \(code))"
        case .reboot: return "guest requested a reboot"
        case .tripleFault: return "guest triple-faulted (CPU shutdown)"
        case .halted: return "guest halted"
        case .stopRequested: return "stopped by the host"
        case .timedOut: return "time limit reached"
        case let .failure(problem): return "VMM failure: \(problem)"
        }
    }
}

/// What a vCPU's run loop does after an exit.
public enum ExitAction: Equatable, Sendable {
    /// Enter the guest again.
    case resume
    /// Hand these bytes to the pending `in`/MMIO load, then enter the guest again.
    case completeRead([UInt8])
    /// Deliver a breakpoint exception (#BP, vector 3) the host failed to emulate, then resume.
    case deliverBreakpoint
    /// Stop the whole machine.
    case stop(StopReason)
}

/// The pure half of the vCPU loop: maps each decoded exit to bus accesses and an action. It never
/// touches /dev/kvm, so it is tested with plain devices.
public struct ExitDispatcher: Sendable {
    /// `int3`, the one-byte breakpoint (Intel SDM Vol. 2A, INT n/INTO/INT3).
    static let int3Opcode: UInt8 = 0xcc
    /// Value a read from an unpopulated port or address returns, as on a real ISA bus.
    static let floatingBusByte: UInt8 = 0xff
    /// KVM_SYSTEM_EVENT types (api.rst, KVM_EXIT_SYSTEM_EVENT).
    static let systemEventShutdown: UInt32 = 1
    static let systemEventReset: UInt32 = 2
    static let systemEventCrash: UInt32 = 3

    public let ioBus: Bus
    public let mmioBus: Bus

    public init(ioBus: Bus, mmioBus: Bus) {
        self.ioBus = ioBus
        self.mmioBus = mmioBus
    }

    public func handle(_ exit: VCPUExit) -> ExitAction {
        switch exit {
        case let .portIn(port, size, count):
            var bytes: [UInt8] = []
            bytes.reserveCapacity(size * count)
            for _ in 0..<count {
                bytes += ioBus.read(UInt64(port), length: size) ?? [UInt8](repeating: Self.floatingBusByte, count: size)
            }
            return .completeRead(bytes)
        case let .portOut(port, size, data):
            guard size > 0 else { return .resume }
            var start = 0
            while start + size <= data.count {
                ioBus.write(UInt64(port), Array(data[start..<(start + size)]))
                start += size
            }
            return .resume
        case let .mmioRead(address, length):
            return .completeRead(mmioBus.read(address, length: length) ?? [UInt8](repeating: Self.floatingBusByte, count: length))
        case let .mmioWrite(address, data):
            mmioBus.write(address, data)
            return .resume
        case .interrupted:
            return .resume
        case .halt:
            return .stop(.halted)
        case .shutdown:
            return .stop(.tripleFault)
        case let .systemEvent(type):
            switch type {
            case Self.systemEventShutdown: return .stop(.powerOff(code: 0))
            case Self.systemEventReset: return .stop(.reboot)
            case Self.systemEventCrash: return .stop(.failure("guest reported a crash"))
            default: return .stop(.failure("unknown KVM system event \(type)"))
            }
        case let .failedEntry(reason):
            return .stop(.failure("KVM could not enter the guest (hardware reason 0x\(String(reason, radix: 16)))"))
        case let .emulationFailure(instruction):
            if instruction.first == Self.int3Opcode { return .deliverBreakpoint }
            let hex = instruction.map { String($0, radix: 16) }.joined(separator: " ")
            return .stop(.failure("KVM failed to emulate an instruction [\(hex.isEmpty ? "bytes not reported" : hex)]"))
        case let .internalError(suberror):
            return .stop(.failure("KVM internal error, suberror \(suberror)"))
        case let .unhandled(reason):
            return .stop(.failure("unhandled KVM exit reason \(reason)"))
        }
    }
}
