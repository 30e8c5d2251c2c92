import Foundation
import FuzzSupport
import Hypervisor

// A split virtqueue as the guest writes it: queue size and ring addresses, then the bytes of guest
// RAM (descriptor table, available ring, buffers). The device pops every chain the driver made
// available and returns each as used, as virtio-blk does; every address and length is the guest's.

/// 64 KiB of real guest RAM (a memfd mapping, as a machine has), shared by all runs and cleared
/// before each.
let memory = try! GuestMemory(size: 64 << 10)

/// Input layout: u8 log2(maximum size), u16 size, u64 descriptor table, u64 available ring,
/// u64 used ring, u8 rounds, then guest RAM from address 0.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzReader(bytes, count)
    var queue = Virtqueue(maximumSize: 1 << (input.integer(UInt8.self) % 16))
    queue.size = input.integer(UInt16.self)
    queue.descriptorTable = input.integer(UInt64.self)
    queue.availableRing = input.integer(UInt64.self)
    queue.usedRing = input.integer(UInt64.self)
    let rounds = Int(input.integer(UInt8.self) % 8) + 1
    let ram = input.remaining().prefix(memory.size)
    let buffer = memory.hostBuffer(at: 0, length: memory.size)!
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    try! memory.write(ram, at: 0)
    // The transport makes a queue ready only when its configuration is valid (§4.2.2.3).
    guard queue.isValid(in: memory) else { return 0 }
    queue.isReady = true
    for _ in 0..<rounds {
        do {
            while let chain = try queue.popAvailable(from: memory) {
                // What the device relies on: every buffer lies wholly in guest RAM, readable first.
                for buffer in chain.buffers {
                    precondition(memory.hostBuffer(at: buffer.address, length: Int(buffer.length)) != nil, "buffer outside RAM")
                }
                precondition(chain.buffers.count <= Int(queue.size), "chain longer than the queue")
                precondition(chain.readable + chain.writable == chain.buffers, "readable buffer after a writable one")
                try queue.pushUsed(head: chain.head, length: chain.buffers.last.map { $0.length } ?? 0, memory: memory)
                _ = queue.interruptSuppressed(memory: memory)
            }
        } catch {
            return 0 // a refused ring resets the device: the guest's loss, not ours
        }
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initializeVirtqueue(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked {
        // Queue of 8 at 0x0 (descriptors), 0x80 (available), 0x100 (used); one request of three
        // descriptors (header, data, status) as virtio-blk gets it, and a chain of one.
        func seed(chains: [[(address: UInt64, length: UInt32, writable: Bool)]]) -> [UInt8] {
            var header = SeedBytes()
            header.append(UInt8(3))
            header.append(UInt16(8))
            header.append(UInt64(0x0))
            header.append(UInt64(0x80))
            header.append(UInt64(0x100))
            header.append(UInt8(1))
            var ram = [UInt8](repeating: 0, count: 0x400)
            func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
                withUnsafeBytes(of: value.littleEndian) { ram.replaceSubrange(offset..<offset + $0.count, with: $0) }
            }
            var descriptor = 0
            for (slot, chain) in chains.enumerated() {
                put(UInt16(descriptor), at: 0x80 + 4 + 2 * slot)
                for (position, buffer) in chain.enumerated() {
                    let base = 16 * descriptor
                    put(buffer.address, at: base)
                    put(buffer.length, at: base + 8)
                    let next: UInt16 = position + 1 < chain.count ? 1 : 0
                    put(next | (buffer.writable ? 2 : 0), at: base + 12)
                    put(UInt16(descriptor + 1), at: base + 14)
                    descriptor += 1
                }
            }
            put(UInt16(chains.count), at: 0x80 + 2)
            header.append(contentsOf: ram)
            return header.bytes
        }
        return [
            "block-request": Data(seed(chains: [[(0x200, 16, false), (0x300, 0x80, true), (0x3ff, 1, true)]])),
            "two-chains": Data(seed(chains: [[(0x200, 16, false)], [(0x300, 4, true)]])),
        ]
    }
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_virtqueue_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzVirtqueue)
}
