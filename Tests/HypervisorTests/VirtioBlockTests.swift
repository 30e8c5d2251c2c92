import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// A scratch directory removed when the value goes away.
final class ScratchDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "streamvm-hv-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

/// Sector `s` byte `i` holds (s * 7 + i) mod 256: the pattern the blk test guest checks.
func patternedDisk(sectors: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: sectors * 512)
    for sector in 0..<sectors { for index in 0..<512 { bytes[sector * 512 + index] = UInt8(truncatingIfNeeded: sector * 7 + index) } }
    return bytes
}

/// Drives a VirtioMMIOTransport the way a guest driver would, through 32-bit register accesses.
struct MMIODriver {
    let transport: VirtioMMIOTransport

    func read(_ offset: UInt64) -> UInt32 {
        var value: UInt32 = 0
        withUnsafeMutableBytes(of: &value) { transport.read(offset: offset, into: $0) }
        return value
    }

    func write(_ offset: UInt64, _ value: UInt32) {
        withUnsafeBytes(of: value) { transport.write(offset: offset, from: $0) }
    }

    /// virtio 1.x §3.1.1 initialisation with one queue at DriverRing's addresses.
    func initialise(queueSize: UInt16) {
        write(0x70, 0)
        write(0x70, 1)
        write(0x70, 3)
        write(0x24, 1)
        write(0x20, 1) // VIRTIO_F_VERSION_1
        write(0x70, 11)
        write(0x30, 0)
        write(0x38, UInt32(queueSize))
        write(0x80, UInt32(DriverRing.descriptorTable))
        write(0x90, UInt32(DriverRing.availableRing))
        write(0xa0, UInt32(DriverRing.usedRing))
        write(0x44, 1)
        write(0x70, 15)
    }
}

struct VirtioBlockTests {
    static let header: UInt64 = 0x30000
    static let data: UInt64 = 0x31000
    static let status: UInt64 = 0x33000

    func makeDevice(sectors: Int = 64) throws -> (ScratchDirectory, GuestMemory, VirtioMMIOTransport, EdgeCounter, String) {
        let scratch = try ScratchDirectory()
        let path = scratch.file("disk.img")
        try Data(patternedDisk(sectors: sectors)).write(to: URL(fileURLWithPath: path))
        let memory = try GuestMemory(size: 2 << 20)
        let edges = EdgeCounter()
        let transport = VirtioMMIOTransport(device: VirtioBlock(backend: try RawFileBackend(path: path, readOnly: false)),
                                            memory: memory, interrupt: edges, logger: Logger(label: "test"))
        return (scratch, memory, transport, edges, path)
    }

    /// Submits header + data + status as one chain; returns the status byte.
    func request(_ ring: inout DriverRing, _ driver: MMIODriver, type: UInt32, sector: UInt64, length: UInt32) throws -> UInt8 {
        let memory = ring.memory
        try memory.store(type, at: Self.header)
        try memory.store(UInt32(0), at: Self.header + 4)
        try memory.store(sector, at: Self.header + 8)
        try memory.store(UInt8(0xee), at: Self.status)
        try ring.setDescriptor(0, address: Self.header, length: 16, flags: 1, next: 1)
        try ring.setDescriptor(1, address: Self.data, length: length, flags: type == 1 ? 1 : 3, next: 2)
        try ring.setDescriptor(2, address: Self.status, length: 1, flags: 2)
        try ring.publish(0)
        driver.write(0x50, 0)
        return try memory.load(UInt8.self, at: Self.status)
    }

    @Test func identifiesAsModernBlockDevice() throws {
        let (_, _, transport, _, _) = try makeDevice()
        let driver = MMIODriver(transport: transport)
        #expect(driver.read(0x000) == 0x7472_6976)
        #expect(driver.read(0x004) == 2)
        #expect(driver.read(0x008) == 2)
        driver.write(0x14, 1)
        #expect(driver.read(0x010) & 1 == 1) // VERSION_1
        #expect(driver.read(0x100) == 64) // capacity in sectors
        #expect(driver.read(0x104) == 0)
        #expect(driver.read(0x900) == 0)
    }

    @Test func readsAndWritesSectorsAndInterrupts() throws {
        let (scratch, memory, transport, edges, path) = try makeDevice()
        defer { withExtendedLifetime(scratch) {} }
        let driver = MMIODriver(transport: transport)
        driver.initialise(queueSize: 8)
        #expect(driver.read(0x70) == 15)
        var ring = DriverRing(memory: memory, size: 8)
        #expect(try request(&ring, driver, type: 0, sector: 3, length: 1024) == 0)
        #expect(try memory.read(at: Self.data, length: 1024) == Array(patternedDisk(sectors: 5)[1536..<2560]))
        #expect(try ring.usedElement(0).length == 1025)
        #expect(edges.count == 1)
        #expect(driver.read(0x60) == 1)
        driver.write(0x64, 1)
        #expect(driver.read(0x60) == 0)

        try memory.write([UInt8](repeating: 0x5a, count: 512), at: Self.data)
        #expect(try request(&ring, driver, type: 1, sector: 63, length: 512) == 0)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(Array(onDisk[(63 * 512)...]) == [UInt8](repeating: 0x5a, count: 512))
        #expect(try request(&ring, driver, type: 4, sector: 0, length: 1) == 0) // flush
    }

    @Test func outOfRangeAndUnknownRequestsGetErrorStatus() throws {
        let (_, memory, transport, _, _) = try makeDevice()
        let driver = MMIODriver(transport: transport)
        driver.initialise(queueSize: 8)
        var ring = DriverRing(memory: memory, size: 8)
        #expect(try request(&ring, driver, type: 0, sector: 64, length: 512) == 1)
        #expect(try request(&ring, driver, type: 0, sector: 63, length: 1024) == 1)
        #expect(try request(&ring, driver, type: 0, sector: UInt64.max, length: 512) == 1)
        #expect(try request(&ring, driver, type: 0, sector: 0, length: 100) == 1) // not whole sectors
        #expect(try request(&ring, driver, type: 77, sector: 0, length: 512) == 2)
        #expect(driver.read(0x70) & 64 == 0)
        #expect(try request(&ring, driver, type: 0, sector: 0, length: 512) == 0)
    }

    @Test func corruptRingSetsNeedsResetUntilTheDriverResets() throws {
        let (_, memory, transport, edges, _) = try makeDevice()
        let driver = MMIODriver(transport: transport)
        driver.initialise(queueSize: 8)
        var ring = DriverRing(memory: memory, size: 8)
        try ring.setDescriptor(0, address: Self.header, length: 16, flags: 1, next: 0) // self loop
        try ring.publish(0)
        driver.write(0x50, 0)
        #expect(driver.read(0x70) & 64 == 64)
        #expect(driver.read(0x60) & 2 == 2) // configuration change interrupt
        #expect(edges.count == 1)
        #expect(try ring.usedIndex() == 0)
        // Further notifications are ignored until reset.
        driver.write(0x50, 0)
        #expect(edges.count == 1)
        driver.initialise(queueSize: 8)
        #expect(driver.read(0x70) == 15)
        ring = DriverRing(memory: memory, size: 8)
        #expect(try request(&ring, driver, type: 0, sector: 0, length: 512) == 0)
    }

    @Test func refusesInvalidQueueSetupAndFeatures() throws {
        let (_, _, transport, _, _) = try makeDevice()
        let driver = MMIODriver(transport: transport)
        driver.initialise(queueSize: 12)
        #expect(driver.read(0x44) == 0)
        driver.write(0x70, 0)
        driver.write(0x70, 3)
        driver.write(0x24, 1)
        driver.write(0x20, 1 | 0x4000_0000) // a feature never offered
        driver.write(0x70, 11)
        #expect(driver.read(0x70) & 8 == 0)
        driver.write(0x70, 15) // DRIVER_OK without FEATURES_OK is ignored
        #expect(driver.read(0x70) & 4 == 0)
        // Queue registers cannot be changed on a live queue; narrow and misaligned accesses read 0.
        driver.initialise(queueSize: 8)
        driver.write(0x38, 4)
        driver.write(0x80, 0x40000)
        #expect(driver.read(0x44) == 1)
        var narrow: UInt16 = 0xffff
        withUnsafeMutableBytes(of: &narrow) { transport.read(offset: 0, into: $0) }
        #expect(narrow == 0)
    }
}

struct BlockBackendTests {
    @Test func copyOnWriteLeavesTheBaseUntouchedAndPersists() throws {
        let scratch = try ScratchDirectory()
        let basePath = scratch.file("base.img")
        let original = patternedDisk(sectors: 32)
        try Data(original).write(to: URL(fileURLWithPath: basePath))
        let overlayPath = scratch.file("overlay.img")
        do {
            let overlay = try CopyOnWriteOverlay(base: try RawFileBackend(path: basePath, readOnly: true), overlayPath: overlayPath)
            #expect(overlay.size == 32 * 512)
            try [UInt8](repeating: 0xab, count: 512).withUnsafeBytes { try overlay.write(at: 5 * 512, from: $0) }
            var readBack = [UInt8](repeating: 0, count: 32 * 512)
            try readBack.withUnsafeMutableBytes { try overlay.read(at: 0, into: $0) }
            var expected = original
            expected.replaceSubrange((5 * 512)..<(6 * 512), with: [UInt8](repeating: 0xab, count: 512))
            #expect(readBack == expected) // the rest of the 4 KiB block still shows the base
            try overlay.flush()
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: basePath)) == Data(original))
        let reopened = try CopyOnWriteOverlay(base: try RawFileBackend(path: basePath, readOnly: true), overlayPath: overlayPath)
        var sector = [UInt8](repeating: 0, count: 1024)
        try sector.withUnsafeMutableBytes { try reopened.read(at: 5 * 512, into: $0) }
        #expect(Array(sector[0..<512]) == [UInt8](repeating: 0xab, count: 512))
        #expect(Array(sector[512...]) == Array(original[(6 * 512)..<(7 * 512)]))
    }

    @Test func readOnlyRawFileRefusesWrites() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("ro.img")
        try Data(count: 4096).write(to: URL(fileURLWithPath: path))
        let backend = try RawFileBackend(path: path, readOnly: true)
        #expect(backend.isReadOnly)
        #expect(throws: HypervisorError.self) { try [UInt8](repeating: 1, count: 512).withUnsafeBytes { try backend.write(at: 0, from: $0) } }
    }
}

struct SnapshotStateTests {
    @Test func virtioTransportStateRoundTripsThroughJSONAndKeepsWorking() throws {
        let (scratch, memory, transport, _, path) = try VirtioBlockTests().makeDevice()
        defer { withExtendedLifetime(scratch) {} }
        let driver = MMIODriver(transport: transport)
        driver.initialise(queueSize: 8)
        var ring = DriverRing(memory: memory, size: 8)
        #expect(try VirtioBlockTests().request(&ring, driver, type: 0, sector: 1, length: 512) == 0)
        let encoded = try JSONEncoder().encode(transport.snapshot())
        let saved = try JSONDecoder().decode(VirtioMMIOTransport.State.self, from: encoded)
        #expect(saved == transport.snapshot())

        // A fresh transport over the same memory picks up where the old one stopped.
        let restored = VirtioMMIOTransport(device: VirtioBlock(backend: try RawFileBackend(path: path, readOnly: false)),
                                           memory: memory, interrupt: EdgeCounter(), logger: Logger(label: "test"))
        try restored.restore(saved)
        #expect(restored.status == 15)
        #expect(try VirtioBlockTests().request(&ring, MMIODriver(transport: restored), type: 0, sector: 2, length: 512) == 0)
        #expect(try ring.usedIndex() == 2)
        #expect(try memory.read(at: VirtioBlockTests.data, length: 512) == Array(patternedDisk(sectors: 3)[1024..<1536]))
    }

    @Test func serialStateRoundTrips() throws {
        let serial = Serial8250(interrupt: EdgeCounter(), output: { _ in })
        writeByte(serial, 3, 0x83)
        writeByte(serial, 0, 0x01)
        writeByte(serial, 3, 0x03)
        writeByte(serial, 7, 0x5a)
        serial.enqueueInput([0x41])
        let saved = try JSONDecoder().decode(Serial8250.State.self, from: try JSONEncoder().encode(serial.snapshot()))
        let copy = Serial8250(interrupt: EdgeCounter(), output: { _ in })
        copy.restore(saved)
        #expect(readByte(copy, 7) == 0x5a)
        #expect(readByte(copy, 0) == 0x41)
    }
}
