import Testing
@testable import Hypervisor

/// A driver-side view of a split virtqueue in guest memory, for building chains by hand.
struct DriverRing {
    static let descriptorTable: UInt64 = 0x10000
    static let availableRing: UInt64 = 0x11000
    static let usedRing: UInt64 = 0x12000
    let memory: GuestMemory
    let size: UInt16
    var availableIndex: UInt16 = 0

    init(memory: GuestMemory, size: UInt16) {
        self.memory = memory
        self.size = size
    }

    var queue: Virtqueue {
        var queue = Virtqueue(maximumSize: 256)
        queue.size = size
        queue.descriptorTable = Self.descriptorTable
        queue.availableRing = Self.availableRing
        queue.usedRing = Self.usedRing
        queue.isReady = true
        return queue
    }

    func setDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let base = Self.descriptorTable + UInt64(index) * 16
        try memory.store(address, at: base)
        try memory.store(length, at: base + 8)
        try memory.store(flags, at: base + 12)
        try memory.store(next, at: base + 14)
    }

    mutating func publish(_ head: UInt16, advance: UInt16 = 1) throws {
        try memory.store(head, at: Self.availableRing + 4 + UInt64(availableIndex % size) * 2)
        availableIndex &+= advance
        try memory.store(availableIndex, at: Self.availableRing + 2)
    }

    func usedIndex() throws -> UInt16 { try memory.load(UInt16.self, at: Self.usedRing + 2) }
    func usedElement(_ slot: UInt16) throws -> (id: UInt32, length: UInt32) {
        let base = Self.usedRing + 4 + UInt64(slot % size) * 8
        return (try memory.load(UInt32.self, at: base), try memory.load(UInt32.self, at: base + 4))
    }
}

struct VirtqueueTests {
    static let next: UInt16 = 1
    static let write: UInt16 = 2

    @Test func parsesAWellFormedChainAndPublishesUsed() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 8)
        try ring.setDescriptor(0, address: 0x20000, length: 16, flags: Self.next, next: 5)
        try ring.setDescriptor(5, address: 0x21000, length: 512, flags: Self.next | Self.write, next: 2)
        try ring.setDescriptor(2, address: 0x22000, length: 1, flags: Self.write)
        try ring.publish(0)
        var queue = ring.queue
        #expect(queue.isValid(in: memory))
        let chain = try #require(try queue.popAvailable(from: memory))
        #expect(chain.head == 0)
        #expect(chain.buffers == [VirtqueueBuffer(address: 0x20000, length: 16, isDeviceWritable: false),
                                  VirtqueueBuffer(address: 0x21000, length: 512, isDeviceWritable: true),
                                  VirtqueueBuffer(address: 0x22000, length: 1, isDeviceWritable: true)])
        #expect(try queue.popAvailable(from: memory) == nil)
        try queue.pushUsed(head: 0, length: 513, memory: memory)
        #expect(try ring.usedIndex() == 1)
        #expect(try ring.usedElement(0) == (0, 513))
    }

    @Test func indicesWrapAround() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 4)
        try ring.setDescriptor(1, address: 0x20000, length: 8, flags: 0)
        var queue = ring.queue
        for _ in 0..<70_000 {
            try ring.publish(1)
            #expect(try queue.popAvailable(from: memory)?.head == 1)
            try queue.pushUsed(head: 1, length: 0, memory: memory)
        }
        #expect(try ring.usedIndex() == UInt16(70_000 % 65_536))
    }

    @Test func detectsALoop() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 8)
        try ring.setDescriptor(0, address: 0x20000, length: 16, flags: Self.next, next: 1)
        try ring.setDescriptor(1, address: 0x21000, length: 16, flags: Self.next, next: 0)
        try ring.publish(0)
        var queue = ring.queue
        #expect(throws: VirtqueueError.chainTooLong) { try queue.popAvailable(from: memory) }
    }

    @Test func selfLoopAndLongestLegalChain() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 16)
        // A chain using every descriptor once is legal ...
        for index in UInt16(0)..<16 {
            try ring.setDescriptor(index, address: 0x20000, length: 4, flags: index == 15 ? 0 : Self.next, next: index + 1)
        }
        try ring.publish(0)
        var queue = ring.queue
        #expect(try queue.popAvailable(from: memory)?.buffers.count == 16)
        // ... one that points back at itself is not.
        try ring.setDescriptor(15, address: 0x20000, length: 4, flags: Self.next, next: 15)
        try ring.publish(0)
        #expect(throws: VirtqueueError.chainTooLong) { try queue.popAvailable(from: memory) }
    }

    @Test func rejectsOutOfRangeIndices() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 8)
        try ring.publish(9)
        var queue = ring.queue
        #expect(throws: VirtqueueError.descriptorIndexOutOfRange(9)) { try queue.popAvailable(from: memory) }
        try ring.setDescriptor(0, address: 0x20000, length: 16, flags: Self.next, next: 8)
        try ring.publish(0)
        #expect(throws: VirtqueueError.descriptorIndexOutOfRange(8)) { try queue.popAvailable(from: memory) }
    }

    @Test func rejectsBuffersOutsideRAMIncludingWraparound() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 8)
        var queue = ring.queue
        for (address, length) in [(UInt64(2 << 20), UInt32(1)), ((2 << 20) - 8, 16), (UInt64.max - 4, 16), (0xffff_ffff_0000, 4096)] {
            try ring.setDescriptor(0, address: address, length: length, flags: 0)
            try ring.publish(0)
            #expect(throws: VirtqueueError.bufferOutsideMemory(address: address, length: length)) { try queue.popAvailable(from: memory) }
        }
        // The last byte of RAM is fine.
        try ring.setDescriptor(0, address: (2 << 20) - 1, length: 1, flags: 0)
        try ring.publish(0)
        #expect(try queue.popAvailable(from: memory)?.buffers.first?.length == 1)
    }

    @Test func rejectsZeroLengthIndirectAndMisorderedBuffers() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 8)
        var queue = ring.queue
        try ring.setDescriptor(0, address: 0x20000, length: 0, flags: 0)
        try ring.publish(0)
        #expect(throws: VirtqueueError.zeroLengthBuffer) { try queue.popAvailable(from: memory) }
        try ring.setDescriptor(0, address: 0x20000, length: 32, flags: 4)
        try ring.publish(0)
        #expect(throws: VirtqueueError.indirectNotNegotiated) { try queue.popAvailable(from: memory) }
        try ring.setDescriptor(0, address: 0x20000, length: 32, flags: Self.write | Self.next, next: 1)
        try ring.setDescriptor(1, address: 0x21000, length: 32, flags: 0)
        try ring.publish(0)
        #expect(throws: VirtqueueError.readableAfterWritable) { try queue.popAvailable(from: memory) }
    }

    @Test func rejectsAvailableIndexRunningAhead() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var ring = DriverRing(memory: memory, size: 8)
        var queue = ring.queue
        try ring.setDescriptor(0, address: 0x20000, length: 16, flags: 0)
        try ring.publish(0, advance: 9)
        #expect(throws: VirtqueueError.availableIndexTooFarAhead(available: 9, consumed: 0)) { try queue.popAvailable(from: memory) }
    }

    @Test func validatesQueueConfiguration() throws {
        let memory = try GuestMemory(size: 2 << 20)
        let ring = DriverRing(memory: memory, size: 8)
        var queue = ring.queue
        #expect(queue.isValid(in: memory))
        for size: UInt16 in [0, 6, 512] {
            queue.size = size
            #expect(!queue.isValid(in: memory))
        }
        queue.size = 8
        queue.descriptorTable = 0x10008 // misaligned
        #expect(!queue.isValid(in: memory))
        queue.descriptorTable = (2 << 20) - 64 // runs off the end of RAM
        #expect(!queue.isValid(in: memory))
        queue.descriptorTable = DriverRing.descriptorTable
        queue.usedRing = UInt64.max - 3
        #expect(!queue.isValid(in: memory))
    }

    @Test func notReadyQueueRefusesWork() throws {
        let memory = try GuestMemory(size: 2 << 20)
        var queue = Virtqueue(maximumSize: 8)
        #expect(throws: VirtqueueError.notReady) { try queue.popAvailable(from: memory) }
    }
}

struct GuestMemoryTests {
    @Test func boundsChecksEveryAccess() throws {
        let memory = try GuestMemory(size: 1 << 20)
        #expect(memory.hostBuffer(at: 0, length: 1 << 20) != nil)
        #expect(memory.hostBuffer(at: 1, length: 1 << 20) == nil)
        #expect(memory.hostBuffer(at: UInt64.max, length: 2) == nil)
        #expect(memory.hostBuffer(at: 0, length: -1) == nil)
        try memory.store(UInt32(0xdead_beef), at: 0xffffc)
        #expect(try memory.load(UInt32.self, at: 0xffffc) == 0xdead_beef)
        #expect(throws: HypervisorError.self) { try memory.load(UInt32.self, at: 0xffffd) }
    }

    @Test func largeMemorySkipsTheMMIOHole() throws {
        let size = 3 << 30 + 64 << 20 // 3 GiB + 64 MiB: the last 64 MiB land above 4 GiB
        let memory = try GuestMemory(size: size)
        #expect(memory.regions.count == 2)
        #expect(memory.regions[1].guestAddress == 0x1_0000_0000)
        #expect(memory.regions[1].length == 64 << 20)
        #expect(memory.hostBuffer(at: 0xd000_0000, length: 4) == nil)
        try memory.store(UInt64(42), at: 0x1_0000_0000)
        #expect(try memory.load(UInt64.self, at: 0x1_0000_0000) == 42)
        let map = E820Entry.map(for: memory.regions)
        #expect(map.last == E820Entry(address: 0x1_0000_0000, size: 64 << 20, kind: .ram))
    }
}
