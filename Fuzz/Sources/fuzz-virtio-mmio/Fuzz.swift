import Foundation
import FuzzSupport
import Hypervisor
import Logging

// The virtio-mmio register window as a guest drives it: any sequence of reads and writes of any
// width at any offset (device registers and configuration space), queue setup with guest-chosen
// sizes and addresses, notifications, resets. The device behind it is virtio-blk on a real file.

struct CountingInterruptLine: InterruptLine {
    func trigger() {}
}

let memory = try! GuestMemory(size: 64 << 10)
let disk: RawFileBackend = {
    let path = NSTemporaryDirectory() + "streamvm-fuzz-virtio-mmio-\(getpid()).img"
    FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x5a, count: 16 * 512))
    let backend = try! RawFileBackend(path: path, readOnly: false)
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "streamvm-fuzz-virtio-mmio-\(getpid()).img") }
    return backend
}()
let logger = Logger(label: "fuzz-virtio-mmio") { _ in SwiftLogNoOpLogHandler() }

/// One register access: kind (bit 0: write, bits 1-2: width 4, 1, 2 or 8 bytes, bit 3: save and
/// restore the transport state first), offset within the 512-byte window, value.
let operationSize = 1 + 2 + 8

/// Input layout: u8 operation count, the operations, then guest RAM from address 0.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioMMIO(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzReader(bytes, count)
    let operations = Int(input.integer(UInt8.self))
    var accesses: [(kind: UInt8, offset: UInt16, value: UInt64)] = []
    for _ in 0..<operations where !input.isAtEnd {
        accesses.append((input.integer(UInt8.self), input.integer(UInt16.self) % 0x200, input.integer(UInt64.self)))
    }
    let buffer = memory.hostBuffer(at: 0, length: memory.size)!
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    try! memory.write(input.remaining().prefix(memory.size), at: 0)

    var transport = VirtioMMIOTransport(device: VirtioBlock(backend: disk), memory: memory,
                                        interrupt: CountingInterruptLine(), logger: logger)
    for access in accesses {
        if access.kind & 8 != 0 {
            // A snapshot of the guest-set state must restore onto a fresh transport.
            let saved = transport.snapshot()
            transport = VirtioMMIOTransport(device: VirtioBlock(backend: disk), memory: memory,
                                            interrupt: CountingInterruptLine(), logger: logger)
            do { try transport.restore(saved) } catch { preconditionFailure("own snapshot refused: \(error)") }
        }
        let width = [4, 1, 2, 8][Int(access.kind >> 1) & 3]
        var value = access.value.littleEndian
        withUnsafeMutableBytes(of: &value) { raw in
            let window = UnsafeMutableRawBufferPointer(rebasing: raw[0..<width])
            if access.kind & 1 != 0 {
                transport.write(offset: UInt64(access.offset), from: UnsafeRawBufferPointer(window))
            } else {
                transport.read(offset: UInt64(access.offset), into: window)
            }
        }
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initializeVirtioMMIO(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked {
        /// A driver's bring-up (virtio 1.x §3.1.1) of queue 0 with 8 entries at 0x0/0x80/0x100, then
        /// one notify; RAM holds one GET_ID request.
        var seed = SeedBytes()
        let writes: [(UInt16, UInt64)] = [
            (0x070, 0), (0x070, 1), (0x070, 3), (0x024, 1), (0x020, 1), (0x024, 0), (0x020, 1 << 9),
            (0x070, 11), (0x030, 0), (0x038, 8), (0x080, 0), (0x084, 0), (0x090, 0x80), (0x094, 0),
            (0x0a0, 0x100), (0x0a4, 0), (0x044, 1), (0x070, 15), (0x050, 0),
        ]
        let reads: [UInt16] = [0x000, 0x004, 0x008, 0x010, 0x034, 0x0fc, 0x100, 0x108]
        seed.append(UInt8(reads.count + writes.count + 2))
        for offset in reads { seed.append(UInt8(0)); seed.append(offset); seed.append(UInt64(0)) }
        for (offset, value) in writes { seed.append(UInt8(1)); seed.append(offset); seed.append(value) }
        seed.append(UInt8(8)); seed.append(UInt16(0x060)); seed.append(UInt64(0))   // save/restore, read status
        seed.append(UInt8(1)); seed.append(UInt16(0x064)); seed.append(UInt64(1))   // acknowledge interrupt
        var ram = [UInt8](repeating: 0, count: 0x240)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { ram.replaceSubrange(offset..<offset + $0.count, with: $0) }
        }
        let chain: [(UInt64, UInt32, UInt16)] = [(0x200, 16, 1), (0x210, 20, 3), (0x230, 1, 2)]
        for (index, (address, length, flags)) in chain.enumerated() {
            put(address, at: 16 * index); put(length, at: 16 * index + 8)
            put(flags, at: 16 * index + 12); put(UInt16(index + 1), at: 16 * index + 14)
        }
        put(UInt16(1), at: 0x82)
        put(UInt32(8), at: 0x200) // GET_ID
        seed.append(contentsOf: ram)
        return ["bring-up-get-id": seed.data]
    }
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_virtio_mmio_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzVirtioMMIO)
}
