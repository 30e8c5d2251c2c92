/// The PS/2 controller's reset line: on PCs, command 0xfe to port 0x64 pulses CPU reset, which is how
/// Linux reboots with `reboot=k` and the usual fallback otherwise. The controller answers the few
/// commands Linux's i8042 probe sends so that probe finishes quickly; there is no keyboard.
/// Commands: IBM PS/2 Technical Reference, "Keyboard/Auxiliary Device Controller".
public final class I8042: BusDevice {
    /// Ports 0x60 (data) to 0x64 (status/command); 0x61-0x63 belong to others but are claimed by the
    /// in-kernel PIT's speaker emulation before they reach us.
    public static let basePort: UInt64 = 0x60
    public static let windowLength: UInt64 = 5
    static let dataOffset: UInt64 = 0
    static let commandOffset: UInt64 = 4

    static let statusOutputFull: UInt8 = 0x01
    static let statusSystemFlag: UInt8 = 0x04
    static let commandReadConfiguration: UInt8 = 0x20
    static let commandWriteConfiguration: UInt8 = 0x60
    static let commandSelfTest: UInt8 = 0xaa
    static let commandTestPort1: UInt8 = 0xab
    static let commandTestPort2: UInt8 = 0xa9
    static let commandWriteOutputPort: UInt8 = 0xd1
    static let commandPulseReset: UInt8 = 0xfe
    static let selfTestPassed: UInt8 = 0x55
    static let portTestPassed: UInt8 = 0x00

    struct State {
        var configuration: UInt8 = 0
        var output: [UInt8] = []
        var pendingDataCommand: UInt8?
    }

    private let state = Locked(State())
    private let requestReset: @Sendable () -> Void

    public init(requestReset: @escaping @Sendable () -> Void) {
        self.requestReset = requestReset
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        let value: UInt8 = state.withLock { state in
            switch offset {
            case Self.dataOffset:
                return state.output.isEmpty ? 0 : state.output.removeFirst()
            case Self.commandOffset:
                return Self.statusSystemFlag | (state.output.isEmpty ? 0 : Self.statusOutputFull)
            default:
                return 0xff
            }
        }
        data.storeLittleEndian(UInt64(value))
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        let reset: Bool = state.withLock { state in
            switch offset {
            case Self.commandOffset:
                state.pendingDataCommand = nil
                switch value {
                case Self.commandReadConfiguration: state.output = [state.configuration]
                case Self.commandWriteConfiguration, Self.commandWriteOutputPort: state.pendingDataCommand = value
                case Self.commandSelfTest: state.output = [Self.selfTestPassed]
                case Self.commandTestPort1, Self.commandTestPort2: state.output = [Self.portTestPassed]
                case Self.commandPulseReset: return true
                default: break
                }
            case Self.dataOffset:
                switch state.pendingDataCommand {
                case Self.commandWriteConfiguration?: state.configuration = value
                // Output port bit 0 low holds the CPU in reset.
                case Self.commandWriteOutputPort?: if value & 1 == 0 { return true }
                default: break
                }
                state.pendingDataCommand = nil
            default:
                break
            }
            return false
        }
        if reset { requestReset() }
    }
}
