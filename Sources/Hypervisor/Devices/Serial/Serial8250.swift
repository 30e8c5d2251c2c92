/// A 16550A-compatible UART (the 8250 family Linux's `console=ttyS0` drives), enough for a console:
/// transmit, receive, the interrupt identification logic, and loopback so the kernel's probe finds it.
/// Register layout: National Semiconductor PC16550D datasheet, Table II.
public final class Serial8250: BusDevice {
    /// COM1: I/O ports 0x3f8-0x3ff, ISA IRQ 4 (the PC standard).
    public static let com1Port: UInt64 = 0x3f8
    public static let com1IRQ: UInt32 = 4
    public static let windowLength: UInt64 = 8

    // Register offsets (datasheet Table II).
    static let dataOffset: UInt64 = 0          // RBR/THR, or DLL when DLAB is set
    static let interruptEnableOffset: UInt64 = 1 // IER, or DLM when DLAB is set
    static let interruptIdentOffset: UInt64 = 2  // IIR on read, FCR on write
    static let lineControlOffset: UInt64 = 3
    static let modemControlOffset: UInt64 = 4
    static let lineStatusOffset: UInt64 = 5
    static let modemStatusOffset: UInt64 = 6
    static let scratchOffset: UInt64 = 7

    static let lineControlDLAB: UInt8 = 0x80
    static let interruptEnableReceive: UInt8 = 0x01
    static let interruptEnableTransmitEmpty: UInt8 = 0x02
    static let interruptEnableMask: UInt8 = 0x0f
    static let identNoInterrupt: UInt8 = 0x01
    static let identTransmitEmpty: UInt8 = 0x02
    static let identReceiveData: UInt8 = 0x04
    static let identFIFOsEnabled: UInt8 = 0xc0
    static let lineStatusDataReady: UInt8 = 0x01
    static let lineStatusTransmitEmpty: UInt8 = 0x60 // THRE | TEMT: we transmit instantly
    static let modemControlLoopback: UInt8 = 0x10
    /// DCD | DSR | CTS: a terminal is always attached.
    static let modemStatusConnected: UInt8 = 0xb0
    /// Bytes buffered from the host before input is dropped (a guest that never reads cannot grow us).
    static let inputCapacity = 4096

    struct State {
        var interruptEnable: UInt8 = 0
        var lineControl: UInt8 = 0x03 // 8 data bits, as after firmware
        var modemControl: UInt8 = 0x08 // OUT2: interrupts routed to the PIC
        var scratch: UInt8 = 0
        var divisorLow: UInt8 = 0x0c // 9600 baud
        var divisorHigh: UInt8 = 0
        var fifoControl: UInt8 = 0
        var transmitEmptyPending = false
        var input: [UInt8] = []
        var inputStart = 0
    }

    private let state = Locked(State())
    private let interrupt: any InterruptLine
    private let output: @Sendable (UInt8) -> Void

    /// `output` receives every transmitted byte (console, log, ready-marker detector).
    public init(interrupt: any InterruptLine, output: @escaping @Sendable (UInt8) -> Void) {
        self.interrupt = interrupt
        self.output = output
    }

    /// Queues host keyboard input for the guest to read.
    public func enqueueInput(_ bytes: [UInt8]) {
        let raise = state.withLock { state -> Bool in
            let room = Self.inputCapacity - (state.input.count - state.inputStart)
            state.input += bytes.prefix(max(room, 0))
            return state.interruptEnable & Self.interruptEnableReceive != 0
        }
        if raise { interrupt.trigger() }
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard !data.isEmpty else { return }
        let value: UInt8 = state.withLock { state in
            let dlab = state.lineControl & Self.lineControlDLAB != 0
            switch offset {
            case Self.dataOffset:
                if dlab { return state.divisorLow }
                guard state.inputStart < state.input.count else { return 0 }
                let byte = state.input[state.inputStart]
                state.inputStart += 1
                if state.inputStart == state.input.count {
                    state.input.removeAll(keepingCapacity: true)
                    state.inputStart = 0
                }
                return byte
            case Self.interruptEnableOffset:
                return dlab ? state.divisorHigh : state.interruptEnable
            case Self.interruptIdentOffset:
                let fifo = state.fifoControl & 1 != 0 ? Self.identFIFOsEnabled : 0
                if state.interruptEnable & Self.interruptEnableReceive != 0, state.inputStart < state.input.count {
                    return Self.identReceiveData | fifo
                }
                if state.interruptEnable & Self.interruptEnableTransmitEmpty != 0, state.transmitEmptyPending {
                    state.transmitEmptyPending = false // reading IIR clears the THRE interrupt (datasheet Table IV)
                    return Self.identTransmitEmpty | fifo
                }
                return Self.identNoInterrupt | fifo
            case Self.lineControlOffset:
                return state.lineControl
            case Self.modemControlOffset:
                return state.modemControl
            case Self.lineStatusOffset:
                return Self.lineStatusTransmitEmpty | (state.inputStart < state.input.count ? Self.lineStatusDataReady : 0)
            case Self.modemStatusOffset:
                guard state.modemControl & Self.modemControlLoopback != 0 else { return Self.modemStatusConnected }
                // Loopback: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD (datasheet, MCR bit 4).
                let control = state.modemControl
                return ((control & 0x01) << 5) | ((control & 0x02) << 3) | ((control & 0x04) << 4) | ((control & 0x08) << 4)
            case Self.scratchOffset:
                return state.scratch
            default:
                return 0xff
            }
        }
        data.storeLittleEndian(UInt64(value))
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        var transmitted: UInt8?
        let raise: Bool = state.withLock { state in
            let dlab = state.lineControl & Self.lineControlDLAB != 0
            switch offset {
            case Self.dataOffset:
                if dlab {
                    state.divisorLow = value
                    return false
                }
                if state.modemControl & Self.modemControlLoopback != 0 {
                    if state.input.count - state.inputStart < Self.inputCapacity { state.input.append(value) }
                    return state.interruptEnable & Self.interruptEnableReceive != 0
                }
                transmitted = value
                state.transmitEmptyPending = true
                return state.interruptEnable & Self.interruptEnableTransmitEmpty != 0
            case Self.interruptEnableOffset:
                if dlab {
                    state.divisorHigh = value
                    return false
                }
                let newlyEnabled = value & ~state.interruptEnable & Self.interruptEnableTransmitEmpty != 0
                state.interruptEnable = value & Self.interruptEnableMask
                if newlyEnabled { state.transmitEmptyPending = true }
                return newlyEnabled
                    || (value & Self.interruptEnableReceive != 0 && state.inputStart < state.input.count)
            case Self.interruptIdentOffset:
                state.fifoControl = value
            case Self.lineControlOffset:
                state.lineControl = value
            case Self.modemControlOffset:
                state.modemControl = value & 0x1f
            case Self.scratchOffset:
                state.scratch = value
            default:
                break
            }
            return false
        }
        if let transmitted { output(transmitted) }
        if raise { interrupt.trigger() }
    }
}
