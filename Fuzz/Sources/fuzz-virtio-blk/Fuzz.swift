import Foundation
import FuzzSupport
import Hypervisor
import Logging

// virtio-blk requests as a guest writes them: a driver brings the device up through the real
// virtio-mmio transport (queue of 8 at fixed addresses), then the input is guest RAM — descriptor
// table, available ring, request headers, data and status buffers — and the driver notifies.
// The disk is a real file (RawFileBackend), so reads and writes reach the kernel.

/// virtio-mmio register offsets (virtio 1.x §4.2.2) and status bits (§2.1).
enum Register {
    static let driverFeatures: UInt64 = 0x020, driverFeaturesSelect: UInt64 = 0x024
    static let queueSelect: UInt64 = 0x030, queueSize: UInt64 = 0x038, queueReady: UInt64 = 0x044
    static let queueNotify: UInt64 = 0x050, status: UInt64 = 0x070
    static let descriptorLow: UInt64 = 0x080, driverLow: UInt64 = 0x090, deviceLow: UInt64 = 0x0a0
}

/// An interrupt line that only counts: no machine is running, and the edges carry no data.
struct CountingInterruptLine: InterruptLine {
    func trigger() {}
}

let memory = try! GuestMemory(size: 64 << 10)
/// 64 sectors of real disk in a temporary file, removed when the process exits normally.
let disk: RawFileBackend = {
    let path = NSTemporaryDirectory() + "streamvm-fuzz-virtio-blk-\(getpid()).img"
    FileManager.default.createFile(atPath: path, contents: Data(repeating: 0xa5, count: 64 * 512))
    let backend = try! RawFileBackend(path: path, readOnly: false)
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "streamvm-fuzz-virtio-blk-\(getpid()).img") }
    return backend
}()
let logger = Logger(label: "fuzz-virtio-blk") { _ in SwiftLogNoOpLogHandler() }

func write(_ transport: VirtioMMIOTransport, _ offset: UInt64, _ value: UInt32) {
    withUnsafeBytes(of: value.littleEndian) { transport.write(offset: offset, from: $0) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioBlock(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let transport = VirtioMMIOTransport(device: VirtioBlock(backend: disk), memory: memory,
                                        interrupt: CountingInterruptLine(), logger: logger)
    // ACKNOWLEDGE | DRIVER, accept VERSION_1 (and FLUSH), FEATURES_OK, queue 0 at 0x0/0x80/0x100, DRIVER_OK.
    write(transport, Register.status, 1 | 2)
    write(transport, Register.driverFeaturesSelect, 1)
    write(transport, Register.driverFeatures, 1)
    write(transport, Register.driverFeaturesSelect, 0)
    write(transport, Register.driverFeatures, 1 << 9)
    write(transport, Register.status, 1 | 2 | 8)
    write(transport, Register.queueSelect, 0)
    write(transport, Register.queueSize, 8)
    write(transport, Register.descriptorLow, 0x0)
    write(transport, Register.driverLow, 0x80)
    write(transport, Register.deviceLow, 0x100)
    write(transport, Register.queueReady, 1)
    write(transport, Register.status, 1 | 2 | 8 | 4)
    precondition(transport.status & 4 != 0, "the driver could not bring the device up")

    let buffer = memory.hostBuffer(at: 0, length: memory.size)!
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    if let bytes, count > 0 {
        buffer.copyMemory(from: UnsafeRawBufferPointer(start: bytes, count: min(count, memory.size)))
    }
    write(transport, Register.queueNotify, 0)
    // A second kick: the device must have consumed everything, or refused the ring.
    write(transport, Register.queueNotify, 0)
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initializeVirtioBlock(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked {
        /// Guest RAM with requests of (type, sector, buffers after the header).
        func seed(_ requests: [(type: UInt32, sector: UInt64, data: [(length: UInt32, writable: Bool)])]) -> Data {
            var ram = [UInt8](repeating: 0, count: 0x1000)
            func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
                withUnsafeBytes(of: value.littleEndian) { ram.replaceSubrange(offset..<offset + $0.count, with: $0) }
            }
            var descriptor = 0
            var cursor = 0x200
            for (slot, request) in requests.enumerated() {
                put(UInt16(descriptor), at: 0x80 + 4 + 2 * slot)
                put(request.type, at: cursor)
                put(request.sector, at: cursor + 8)
                var chain: [(UInt64, UInt32, Bool)] = [(UInt64(cursor), 16, false)]
                cursor += 16
                for buffer in request.data {
                    chain.append((UInt64(cursor), buffer.length, buffer.writable))
                    cursor += Int(buffer.length)
                }
                chain.append((UInt64(cursor), 1, true)) // status byte
                cursor += 1
                for (position, (address, length, writable)) in chain.enumerated() {
                    let base = 16 * descriptor
                    put(address, at: base)
                    put(length, at: base + 8)
                    put((position + 1 < chain.count ? UInt16(1) : 0) | (writable ? 2 : 0), at: base + 12)
                    put(UInt16(descriptor + 1), at: base + 14)
                    descriptor += 1
                }
            }
            put(UInt16(requests.count), at: 0x80 + 2)
            return Data(ram.prefix(max(cursor, 0x200)))
        }
        return [
            "read": seed([(0, 2, [(512, true)])]),
            "write-flush": seed([(1, 3, [(512, false)]), (4, 0, [])]),
            "get-id": seed([(8, 0, [(20, true)])]),
        ]
    }
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_virtio_blk_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzVirtioBlock)
}
