import Testing
@testable import Hypervisor

/// A register file device: remembers the last write at each offset; reads return it. Used to see
/// exactly which offsets and widths the bus delivers.
final class RegisterFile: BusDevice, @unchecked Sendable {
    let registers = Locked<[UInt64: [UInt8]]>([:])

    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        let stored = registers.withLock { $0[offset] } ?? [UInt8](repeating: 0xaa, count: data.count)
        for index in 0..<data.count { data[index] = index < stored.count ? stored[index] : 0 }
    }

    func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        registers.withLock { $0[offset] = Array(data) }
    }
}

struct BusTests {
    @Test func resolvesAddressesToDeviceOffsets() throws {
        var bus = Bus()
        let first = RegisterFile()
        let second = RegisterFile()
        try bus.insert(first, at: 0x3f8, length: 8)
        try bus.insert(second, at: 0x60, length: 5)
        #expect(bus.resolve(0x3f8)?.offset == 0)
        #expect(bus.resolve(0x3ff)?.offset == 7)
        #expect(bus.resolve(0x3ff)?.device === first)
        #expect(bus.resolve(0x400) == nil)
        #expect(bus.resolve(0x64)?.device === second)
        #expect(bus.resolve(0x64)?.offset == 4)
        #expect(bus.resolve(0x5f) == nil)
        #expect(bus.resolve(0) == nil)
    }

    @Test func refusesOverlappingEmptyAndWrappingWindows() throws {
        var bus = Bus()
        try bus.insert(RegisterFile(), at: 0x1000, length: 0x1000)
        #expect(throws: HypervisorError.self) { try bus.insert(RegisterFile(), at: 0x1fff, length: 2) }
        #expect(throws: HypervisorError.self) { try bus.insert(RegisterFile(), at: 0x0fff, length: 2) }
        #expect(throws: HypervisorError.self) { try bus.insert(RegisterFile(), at: 0x800, length: 0x2000) }
        #expect(throws: HypervisorError.self) { try bus.insert(RegisterFile(), at: 0x5000, length: 0) }
        #expect(throws: HypervisorError.self) { try bus.insert(RegisterFile(), at: UInt64.max - 4, length: 16) }
        try bus.insert(RegisterFile(), at: 0x2000, length: 0x1000) // adjacent is fine
        try bus.insert(RegisterFile(), at: 0x0, length: 0x1000)
        #expect(bus.resolve(0x2000) != nil && bus.resolve(0x0fff) != nil)
    }
}

struct ExitDispatcherTests {
    func dispatcher() throws -> (ExitDispatcher, RegisterFile, RegisterFile) {
        var io = Bus()
        var mmio = Bus()
        let port = RegisterFile()
        let window = RegisterFile()
        try io.insert(port, at: 0x500, length: 4)
        try mmio.insert(window, at: 0xd000_0000, length: 0x1000)
        return (ExitDispatcher(ioBus: io, mmioBus: mmio), port, window)
    }

    @Test func portWritesReachTheDeviceAtTheirOffset() throws {
        let (dispatcher, port, _) = try dispatcher()
        #expect(dispatcher.handle(.portOut(port: 0x502, size: 2, data: [0x34, 0x12])) == .resume)
        #expect(port.registers.withLock { $0[2] } == [0x34, 0x12])
        #expect(dispatcher.handle(.portIn(port: 0x502, size: 2, count: 1)) == .completeRead([0x34, 0x12]))
    }

    @Test func repeatedStringIOSplitsIntoItems() throws {
        let (dispatcher, port, _) = try dispatcher()
        _ = dispatcher.handle(.portOut(port: 0x501, size: 1, data: [1, 2, 3]))
        #expect(port.registers.withLock { $0[1] } == [3])
        #expect(dispatcher.handle(.portIn(port: 0x501, size: 1, count: 3)) == .completeRead([3, 3, 3]))
    }

    @Test func unpopulatedPortsAndAddressesFloatHigh() throws {
        let (dispatcher, _, _) = try dispatcher()
        #expect(dispatcher.handle(.portIn(port: 0x80, size: 4, count: 1)) == .completeRead([0xff, 0xff, 0xff, 0xff]))
        #expect(dispatcher.handle(.portOut(port: 0x80, size: 1, data: [7])) == .resume)
        #expect(dispatcher.handle(.mmioRead(address: 0xe000_0000, length: 2)) == .completeRead([0xff, 0xff]))
    }

    @Test func mmioGoesToTheWindowOffset() throws {
        let (dispatcher, _, window) = try dispatcher()
        _ = dispatcher.handle(.mmioWrite(address: 0xd000_0070, data: [1, 0, 0, 0]))
        #expect(window.registers.withLock { $0[0x70] } == [1, 0, 0, 0])
        #expect(dispatcher.handle(.mmioRead(address: 0xd000_0070, length: 4)) == .completeRead([1, 0, 0, 0]))
    }

    @Test func lifecycleExitsStopWithDistinctReasons() throws {
        let (dispatcher, _, _) = try dispatcher()
        #expect(dispatcher.handle(.shutdown) == .stop(.tripleFault))
        #expect(dispatcher.handle(.systemEvent(type: 1)) == .stop(.powerOff(code: 0)))
        #expect(dispatcher.handle(.systemEvent(type: 2)) == .stop(.reboot))
        #expect(dispatcher.handle(.halt) == .stop(.halted))
        #expect(dispatcher.handle(.interrupted) == .resume)
        guard case .stop(.failure) = dispatcher.handle(.failedEntry(reason: 0x21)) else { Issue.record("failed entry must stop"); return }
        guard case .stop(.failure) = dispatcher.handle(.unhandled(reason: 99)) else { Issue.record("unknown exit must stop"); return }
    }

    @Test func failedInt3EmulationBecomesABreakpoint() throws {
        let (dispatcher, _, _) = try dispatcher()
        #expect(dispatcher.handle(.emulationFailure(instruction: [0xcc])) == .deliverBreakpoint)
        guard case let .stop(.failure(message)) = dispatcher.handle(.emulationFailure(instruction: [0x0f, 0xb8, 0xc0])) else {
            Issue.record("other failed instructions must stop the machine")
            return
        }
        #expect(message.contains("f b8 c0"))
    }
}
