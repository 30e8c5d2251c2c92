import Foundation
import Logging
import Testing
@testable import Hypervisor

/// A read-only disk whose reads wait until the test opens the gate: a backend fetching a chunk over
/// a slow link. Reads fill the buffer with 0xab.
final class GatedBackend: BlockBackend, @unchecked Sendable {
    let size: UInt64 = 64 * 512
    let isReadOnly = true
    let entered = DispatchSemaphore(value: 0)
    let gate = DispatchSemaphore(value: 0)

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        entered.signal()
        gate.wait()
        buffer.initializeMemory(as: UInt8.self, repeating: 0xab)
    }

    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        throw HypervisorError.invalidConfiguration("read-only test disk")
    }

    func flush() throws {}
}

/// Queue runs that block on device I/O (a disk chunk coming over a WAN). The driver's interrupt
/// handler reads InterruptStatus and acknowledges it with the guest's interrupts off: it must not wait
/// for the run (a vCPU stuck in an MMIO exit). A reset must (virtio 1.x §2.1.2: once a reset reads
/// back 0, the device no longer touches the rings). Each request is announced when it completes,
/// not when the slowest one queued with it does.
struct VirtioQueueRunTests {
    static let header: UInt64 = 0x30000
    static let data: UInt64 = 0x31000
    static let status: UInt64 = 0x33000
    /// Long enough never to be reached unless something is wrong (it is a deadlock guard, not a speed bound).
    static var patience: DispatchTime { .now() + 60 }

    @Test func interruptRegistersAnswerWhileAQueueRunWaitsForTheDisk() throws {
        let memory = try GuestMemory(size: 2 << 20)
        let backend = GatedBackend()
        let transport = VirtioMMIOTransport(device: VirtioBlock(backend: backend), memory: memory,
                                            interrupt: EdgeCounter(), logger: Logger(label: "test"))
        let driver = MMIODriver(transport: transport)
        driver.initialise(queueSize: 8)
        var ring = DriverRing(memory: memory, size: 8)
        try memory.store(UInt32(0), at: Self.header) // VIRTIO_BLK_T_IN
        try memory.store(UInt64(2), at: Self.header + 8)
        try ring.setDescriptor(0, address: Self.header, length: 16, flags: 1, next: 1)
        try ring.setDescriptor(1, address: Self.data, length: 512, flags: 3, next: 2)
        try ring.setDescriptor(2, address: Self.status, length: 1, flags: 2)
        try ring.publish(0)

        // QueueNotify from another "vCPU" (or the doorbell thread): the run blocks in the backend.
        let runDone = DispatchSemaphore(value: 0)
        Thread { driver.write(0x50, 0); runDone.signal() }.start()
        #expect(backend.entered.wait(timeout: Self.patience) == .success)

        // The interrupt handler's accesses answer while the run is still blocked.
        let handled = DispatchSemaphore(value: 0)
        Thread { _ = driver.read(0x60); driver.write(0x64, 1); _ = driver.read(0x70); handled.signal() }.start()
        #expect(handled.wait(timeout: Self.patience) == .success)

        // A reset waits for the run.
        let resetDone = DispatchSemaphore(value: 0)
        Thread { driver.write(0x70, 0); resetDone.signal() }.start()
        #expect(resetDone.wait(timeout: .now() + 0.5) == .timedOut)

        backend.gate.signal()
        #expect(runDone.wait(timeout: Self.patience) == .success)
        #expect(resetDone.wait(timeout: Self.patience) == .success)
        #expect(try memory.load(UInt8.self, at: Self.status) == 0)
        #expect(try memory.read(at: Self.data, length: 512) == [UInt8](repeating: 0xab, count: 512))
        #expect(try ring.usedElement(0).length == 513)
        #expect(driver.read(0x70) == 0)
    }

    @Test func eachCompletedRequestInterruptsBeforeTheNextOneIsServed() throws {
        let memory = try GuestMemory(size: 2 << 20)
        let backend = GatedBackend()
        let edges = EdgeCounter()
        let transport = VirtioMMIOTransport(device: VirtioBlock(backend: backend), memory: memory,
                                            interrupt: edges, logger: Logger(label: "test"))
        let driver = MMIODriver(transport: transport)
        driver.initialise(queueSize: 8)
        var ring = DriverRing(memory: memory, size: 8)
        for request in 0..<2 {
            let offset = UInt64(request) * 0x4000
            try memory.store(UInt32(0), at: Self.header + offset)
            try memory.store(UInt64(request), at: Self.header + offset + 8)
            let first = UInt16(request * 3)
            try ring.setDescriptor(first, address: Self.header + offset, length: 16, flags: 1, next: first + 1)
            try ring.setDescriptor(first + 1, address: Self.data + offset, length: 512, flags: 3, next: first + 2)
            try ring.setDescriptor(first + 2, address: Self.status + offset, length: 1, flags: 2)
            try ring.publish(first)
        }
        let runDone = DispatchSemaphore(value: 0)
        Thread { driver.write(0x50, 0); runDone.signal() }.start()
        #expect(backend.entered.wait(timeout: Self.patience) == .success)
        backend.gate.signal()
        // The second request is now blocked in the backend; the first is in the used ring and announced.
        #expect(backend.entered.wait(timeout: Self.patience) == .success)
        #expect(try ring.usedIndex() == 1)
        #expect(edges.count == 1)
        #expect(driver.read(0x60) == 1)
        backend.gate.signal()
        #expect(runDone.wait(timeout: Self.patience) == .success)
        #expect(try ring.usedIndex() == 2)
        #expect(edges.count == 2)
    }
}
