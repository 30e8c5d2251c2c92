import Synchronization

/// Why a virtqueue cannot be used any more; the transport answers with DEVICE_NEEDS_RESET.
public enum VirtqueueError: Error, Equatable, Sendable {
    case notReady
    case ringOutsideMemory
    /// avail.idx ran more than `size` entries ahead of what the device consumed.
    case availableIndexTooFarAhead(available: UInt16, consumed: UInt16)
    case descriptorIndexOutOfRange(UInt16)
    /// A chain visited more descriptors than the queue has: it loops.
    case chainTooLong
    case bufferOutsideMemory(address: UInt64, length: UInt32)
    case zeroLengthBuffer
    /// VIRTIO_F_INDIRECT_DESC was not offered, so indirect descriptors are a driver error.
    case indirectNotNegotiated
    /// A device-readable buffer followed a device-writable one (virtio 1.x §2.7.4.2 forbids it).
    case readableAfterWritable
    /// A buffer the device cannot use in the direction it points: device-writable on a queue the
    /// device only reads (virtio-net transmit), device-readable on one it only writes (receive).
    case wrongBufferDirection
}

/// One guest buffer of a chain, already checked to lie wholly inside guest RAM.
public struct VirtqueueBuffer: Equatable, Sendable {
    public let address: UInt64
    public let length: UInt32
    public let isDeviceWritable: Bool
}

/// A descriptor chain popped from the available ring.
public struct DescriptorChain: Equatable, Sendable {
    public let head: UInt16
    public let buffers: [VirtqueueBuffer]

    public var readable: [VirtqueueBuffer] { buffers.filter { !$0.isDeviceWritable } }
    public var writable: [VirtqueueBuffer] { buffers.filter(\.isDeviceWritable) }
}

/// A split virtqueue (virtio 1.x §2.7) as the device sees it. All guest-controlled values — ring
/// addresses, queue size, indices, descriptor fields — are read once and validated before use.
public struct Virtqueue: Sendable, Equatable, Codable {
    /// Descriptor flags (virtio 1.x §2.7.5).
    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4
    static let descriptorSize: UInt64 = 16
    /// Ring layouts (§2.7.6, §2.7.8): flags u16, idx u16, then entries, then an event u16.
    static let ringHeaderSize: UInt64 = 4
    static let availableEntrySize: UInt64 = 2
    static let usedEntrySize: UInt64 = 8
    /// Alignment the spec requires of each area (§2.7, table "Virtqueue Part Alignment").
    static let descriptorAlignment: UInt64 = 16
    static let availableAlignment: UInt64 = 2
    static let usedAlignment: UInt64 = 4
    /// Largest queue a split ring may have (§2.7: "Queue Size ... maximum 32768").
    public static let absoluteMaximumSize: UInt16 = 32768

    public let maximumSize: UInt16
    public var size: UInt16
    public var isReady = false
    public var descriptorTable: UInt64 = 0
    public var availableRing: UInt64 = 0
    public var usedRing: UInt64 = 0
    /// Free-running counters (wrap at 2^16, like the ring indices).
    public private(set) var nextAvailable: UInt16 = 0
    public private(set) var nextUsed: UInt16 = 0

    public init(maximumSize: UInt16) {
        precondition(maximumSize > 0 && maximumSize <= Self.absoluteMaximumSize && maximumSize & (maximumSize - 1) == 0)
        self.maximumSize = maximumSize
        size = maximumSize
    }

    /// Back to the state after device reset.
    public mutating func reset() {
        self = Virtqueue(maximumSize: maximumSize)
    }

    /// Whether the driver's configuration can be used: size a power of two within bounds, each area
    /// aligned and wholly inside guest RAM.
    public func isValid(in memory: GuestMemory) -> Bool {
        guard size > 0, size <= maximumSize, size & (size - 1) == 0 else { return false }
        let count = UInt64(size)
        let areas: [(UInt64, UInt64, UInt64)] = [
            (descriptorTable, Self.descriptorSize * count, Self.descriptorAlignment),
            (availableRing, Self.ringHeaderSize + Self.availableEntrySize * count + 2, Self.availableAlignment),
            (usedRing, Self.ringHeaderSize + Self.usedEntrySize * count + 2, Self.usedAlignment),
        ]
        return areas.allSatisfy { address, length, alignment in
            address % alignment == 0 && memory.hostBuffer(at: address, length: Int(length)) != nil
        }
    }

    /// Takes the next chain the driver made available, or nil when there is none.
    public mutating func popAvailable(from memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain? {
        guard isReady else { throw .notReady }
        let availableIndex = try load(UInt16.self, at: availableRing + 2, memory)
        let pending = availableIndex &- nextAvailable
        guard pending <= size else { throw .availableIndexTooFarAhead(available: availableIndex, consumed: nextAvailable) }
        guard pending > 0 else { return nil }
        // Read the ring entry only after seeing idx (§2.7.13.3: driver writes the entry before idx).
        atomicMemoryFence(ordering: .acquiring)
        let slot = UInt64(nextAvailable % size)
        let head = try load(UInt16.self, at: availableRing + Self.ringHeaderSize + slot * Self.availableEntrySize, memory)
        nextAvailable &+= 1
        return try walkChain(from: head, memory: memory)
    }

    /// Follows `next` links from `head`, copying each descriptor once before checking it.
    func walkChain(from head: UInt16, memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain {
        var buffers: [VirtqueueBuffer] = []
        var index = head
        var sawWritable = false
        while true {
            guard index < size else { throw .descriptorIndexOutOfRange(index) }
            guard buffers.count < Int(size) else { throw .chainTooLong }
            let base = descriptorTable + UInt64(index) * Self.descriptorSize
            let address = try load(UInt64.self, at: base, memory)
            let length = try load(UInt32.self, at: base + 8, memory)
            let flags = try load(UInt16.self, at: base + 12, memory)
            let next = try load(UInt16.self, at: base + 14, memory)
            guard flags & Self.flagIndirect == 0 else { throw .indirectNotNegotiated }
            guard length > 0 else { throw .zeroLengthBuffer }
            guard memory.hostBuffer(at: address, length: Int(length)) != nil else {
                throw .bufferOutsideMemory(address: address, length: length)
            }
            let writable = flags & Self.flagWrite != 0
            if sawWritable && !writable { throw .readableAfterWritable }
            sawWritable = sawWritable || writable
            buffers.append(VirtqueueBuffer(address: address, length: length, isDeviceWritable: writable))
            guard flags & Self.flagNext != 0 else { break }
            index = next
        }
        return DescriptorChain(head: head, buffers: buffers)
    }

    /// Returns chain `head` to the driver, saying `length` bytes were written into its buffers.
    public mutating func pushUsed(head: UInt16, length: UInt32, memory: GuestMemory) throws(VirtqueueError) {
        guard isReady else { throw .notReady }
        let slot = UInt64(nextUsed % size)
        let element = usedRing + Self.ringHeaderSize + slot * Self.usedEntrySize
        try store(UInt32(head), at: element, memory)
        try store(length, at: element + 4, memory)
        nextUsed &+= 1
        // The element must be visible before the index that publishes it (§2.7.8.2).
        atomicMemoryFence(ordering: .releasing)
        try store(nextUsed, at: usedRing + 2, memory)
    }

    /// Whether the driver asked not to be interrupted (avail.flags VIRTQ_AVAIL_F_NO_INTERRUPT, §2.7.7).
    /// Called after `pushUsed`: the full fence keeps the used.idx store ahead of the flags load (x86
    /// reorders a store before a later load). Without it the device can read a stale "no interrupt"
    /// while the driver, having just cleared it, reads a stale used.idx: neither sees the request
    /// complete, and the driver (virtio_blk has no timeout) waits for ever.
    public func interruptSuppressed(memory: GuestMemory) -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return ((try? load(UInt16.self, at: availableRing, memory)) ?? 0) & 1 != 0
    }

    private func load<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64, _ memory: GuestMemory) throws(VirtqueueError) -> T {
        do { return try memory.load(type, at: address) } catch { throw .ringOutsideMemory }
    }

    private func store<T: FixedWidthInteger>(_ value: T, at address: UInt64, _ memory: GuestMemory) throws(VirtqueueError) {
        do { try memory.store(value, at: address) } catch { throw .ringOutsideMemory }
    }
}
