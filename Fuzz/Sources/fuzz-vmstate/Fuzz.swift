import Foundation
import FuzzSupport
import Hypervisor
import Logging

// vmstate.json as `run --restore` and stream-boot read it: the snapshot is decoded and validated,
// then every device record is loaded into a device of its kind the way a restore does, and the
// restored virtio queues are kicked (a restored machine kicks every doorbell). Nothing of this may
// trap, whatever the file says; refusals are errors.

struct CountingInterruptLine: InterruptLine {
    func trigger() {}
}

let memory = try! GuestMemory(size: 64 << 10)
let disk: RawFileBackend = {
    let path = NSTemporaryDirectory() + "streamvm-fuzz-vmstate-\(getpid()).img"
    FileManager.default.createFile(atPath: path, contents: Data(repeating: 0, count: 16 * 512))
    let backend = try! RawFileBackend(path: path, readOnly: false)
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "streamvm-fuzz-vmstate-\(getpid()).img") }
    return backend
}()
let logger = Logger(label: "fuzz-vmstate") { _ in SwiftLogNoOpLogHandler() }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVMState(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let snapshot = try? MachineSnapshot.decode(FuzzInput.data(bytes, count)) else { return 0 }
    for record in snapshot.devices {
        let state = Data(record.state.utf8)
        if record.kind.hasPrefix("virtio-mmio/") {
            let transport = VirtioMMIOTransport(device: VirtioBlock(backend: disk), memory: memory,
                                                interrupt: CountingInterruptLine(), logger: logger)
            guard (try? transport.restoreState(state)) != nil else { continue }
            for queue in 0..<2 { transport.notify(queue: queue) }
        } else if record.kind == "serial8250" {
            let serial = Serial8250(interrupt: CountingInterruptLine(), output: { _ in })
            _ = try? serial.restoreState(state)
        }
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initializeVMState(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked {
        // A vmstate.json the VMM wrote (`streamvm snapshot`) cannot be made without KVM, so the seed
        // starts from one (STREAMVM_FUZZ_VMSTATE_SOURCE) and is shrunk to 16 pages of RAM, through
        // the real decoder and encoder, so that mutations stay small.
        guard let source = ProcessInfo.processInfo.environment["STREAMVM_FUZZ_VMSTATE_SOURCE"] else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "set STREAMVM_FUZZ_VMSTATE_SOURCE to a vmstate.json written by streamvm snapshot"])
        }
        var snapshot = try MachineSnapshot.decode(try Data(contentsOf: URL(fileURLWithPath: source)))
        let pages = 16
        snapshot.memorySize = pages * snapshot.memory.pageSize
        snapshot.memory.size = snapshot.memorySize
        snapshot.memory.pageDigests = snapshot.memory.pageDigests.prefix(pages * 8)
        snapshot.memory.dataPages = (0..<pages).filter { snapshot.memory.digest(ofPage: $0) != 0 }.count
        try snapshot.validate()
        return ["shrunk-snapshot": try snapshot.encoded()]
    }
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_vmstate_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzVMState)
}
