import Testing
@testable import Hypervisor

/// Counts interrupt edges.
final class EdgeCounter: InterruptLine, @unchecked Sendable {
    let edges = Locked(0)
    func trigger() { edges.withLock { $0 += 1 } }
    var count: Int { edges.withLock { $0 } }
}

final class ByteSink: @unchecked Sendable {
    let bytes = Locked<[UInt8]>([])
    func append(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

func readByte(_ device: any BusDevice, _ offset: UInt64) -> UInt8 {
    var value: UInt8 = 0
    withUnsafeMutableBytes(of: &value) { device.read(offset: offset, into: $0) }
    return value
}

func writeByte(_ device: any BusDevice, _ offset: UInt64, _ value: UInt8) {
    withUnsafeBytes(of: value) { device.write(offset: offset, from: $0) }
}

struct SerialTests {
    @Test func transmitsBytesAndAlwaysReportsTransmitterEmpty() {
        let sink = ByteSink()
        let serial = Serial8250(interrupt: EdgeCounter(), output: { sink.append($0) })
        for byte in "hi\n".utf8 { writeByte(serial, 0, byte) }
        #expect(sink.text == "hi\n")
        #expect(readByte(serial, 5) & 0x60 == 0x60)
        #expect(readByte(serial, 5) & 0x01 == 0)
    }

    @Test func divisorLatchHidesDataRegisters() {
        let sink = ByteSink()
        let serial = Serial8250(interrupt: EdgeCounter(), output: { sink.append($0) })
        writeByte(serial, 3, 0x80) // DLAB
        writeByte(serial, 0, 0x01)
        writeByte(serial, 1, 0x00)
        #expect(readByte(serial, 0) == 0x01)
        writeByte(serial, 3, 0x03)
        #expect(sink.text.isEmpty)
    }

    @Test func transmitterEmptyInterruptIsRaisedAndClearedByReadingIIR() {
        let edges = EdgeCounter()
        let serial = Serial8250(interrupt: edges, output: { _ in })
        writeByte(serial, 1, 0x02) // enable THRE interrupt
        #expect(edges.count == 1)
        #expect(readByte(serial, 2) & 0x0f == 0x02)
        #expect(readByte(serial, 2) & 0x0f == 0x01) // cleared by the read
        writeByte(serial, 0, 0x41)
        #expect(edges.count == 2)
    }

    @Test func inputIsReadInOrderWithDataReadyAndInterrupt() {
        let edges = EdgeCounter()
        let serial = Serial8250(interrupt: edges, output: { _ in })
        writeByte(serial, 1, 0x01)
        serial.enqueueInput(Array("ab".utf8))
        #expect(edges.count == 1)
        #expect(readByte(serial, 2) & 0x0f == 0x04)
        #expect(readByte(serial, 5) & 1 == 1)
        #expect(readByte(serial, 0) == UInt8(ascii: "a"))
        #expect(readByte(serial, 0) == UInt8(ascii: "b"))
        #expect(readByte(serial, 5) & 1 == 0)
    }

    @Test func loopbackMapsModemControlToStatusAsLinuxProbes() {
        let sink = ByteSink()
        let serial = Serial8250(interrupt: EdgeCounter(), output: { sink.append($0) })
        writeByte(serial, 4, 0x10 | 0x0a) // LOOP | OUT2 | RTS
        #expect(readByte(serial, 6) & 0xf0 == 0x90) // DCD | CTS, as autoconfig in 8250_port.c expects
        writeByte(serial, 0, 0x55)
        #expect(sink.text.isEmpty)
        #expect(readByte(serial, 0) == 0x55)
    }
}

struct I8042Tests {
    @Test func pulseResetCommandRequestsReboot() {
        let resets = Locked(0)
        let controller = I8042(requestReset: { resets.withLock { $0 += 1 } })
        writeByte(controller, 4, 0xaa)
        #expect(readByte(controller, 4) & 1 == 1)
        #expect(readByte(controller, 0) == 0x55)
        #expect(resets.withLock { $0 } == 0)
        writeByte(controller, 4, 0xfe)
        #expect(resets.withLock { $0 } == 1)
    }

    @Test func configurationByteRoundTrips() {
        let controller = I8042(requestReset: {})
        writeByte(controller, 4, 0x60)
        writeByte(controller, 0, 0x47)
        writeByte(controller, 4, 0x20)
        #expect(readByte(controller, 0) == 0x47)
    }
}

struct ConsoleMonitorTests {
    @Test func detectsReadyMarkerOnceOnACompleteLine() {
        let readies = Locked(0)
        let sink = ByteSink()
        let console = ConsoleMonitor(readyMarker: "STREAMVM-READY", forward: { sink.append($0) }, onReady: { readies.withLock { $0 += 1 } })
        for byte in "boot\nSTREAMVM-REA".utf8 { console.receive(byte) }
        #expect(!console.isReady)
        for byte in "DY\r\nSTREAMVM-READY\n".utf8 { console.receive(byte) }
        #expect(console.isReady)
        #expect(readies.withLock { $0 } == 1)
        #expect(sink.text == "boot\nSTREAMVM-READY\r\nSTREAMVM-READY\n")
    }
}
