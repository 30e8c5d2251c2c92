import CKVM
import Foundation
import Glibc
import Logging
import TestSupport
import Testing
@testable import Hypervisor

/// Boots the snapshot test guest, pauses it at its ready marker and saves it into `directory`.
/// Returns the checksum the guest printed before the snapshot.
func snapshotTestGuest(into directory: String, mib: Int = 8, memoryMiB: Int = 64) throws -> String {
    let configuration = MachineConfiguration(memorySize: memoryMiB << 20, image: .flat(try TestGuest.image.get()),
                                             commandLine: "mode=snapshot mib=\(mib)", pauseAtReady: true)
    let machine = try Machine(configuration: configuration, logger: Logger(label: "test-snapshot"))
    let reason = machine.run(timeout: .seconds(90))
    guard reason == .stopRequested, machine.console.isReady else {
        throw HypervisorError.invalidConfiguration("snapshot guest did not pause at ready: \(reason); console: \(machine.console.output)")
    }
    try machine.saveSnapshot(to: directory)
    return try checksum(after: "snapshot checksum ", in: machine.console.output)
}

func checksum(after prefix: String, in console: String) throws -> String {
    guard let range = console.range(of: prefix) else { throw HypervisorError.invalidConfiguration("no \"\(prefix)\" in: \(console)") }
    return String(console[range.upperBound...].prefix(18))
}

/// Resumes the snapshot in `directory` and runs it to power-off.
func resumeTestGuest(_ plan: RestorePlan, memoryMiB: Int = 64, beforeRun: (Machine) -> Void = { _ in }) throws -> (StopReason, String, Machine) {
    let configuration = MachineConfiguration(memorySize: memoryMiB << 20, image: .flat([]), restore: plan)
    let machine = try Machine(configuration: configuration, logger: Logger(label: "test-restore"))
    beforeRun(machine)
    let reason = machine.run(timeout: .seconds(90))
    return (reason, machine.console.output, machine)
}

@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: snapshot tests skipped"),
       .timeLimit(.minutes(3)), .offCooperativePool)
struct SnapshotRestoreTests {
    @Test func lazyRestoreGivesTheGuestEveryPageAsItWasAndLogsEachFirstTouchOnce() throws {
        let scratch = try ScratchDirectory()
        let before = try snapshotTestGuest(into: scratch.path)
        let plan = try RestorePlan.load(directory: scratch.path)
        #expect(plan.state.memory.dataPages < plan.state.memory.pageCount, "zero pages must be holes")
        let (reason, console, machine) = try resumeTestGuest(plan)
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(try checksum(after: "resumed checksum ", in: console) == before)
        #expect(console.contains("bad pages 0x0000000000000000"))
        #expect(machine.console.isReady, "the guest prints the ready marker again after resuming")
        let handler = try #require(machine.pageFaultHandler)
        let touched = handler.faultLog.map(\.page)
        #expect(Set(touched).count == touched.count, "each first touch is logged once")
        // The guest re-read its whole 8 MiB region (pages from 8 MiB), so each of those was touched.
        let regionPages = (8 << 20) / GuestMemory.pageSize..<((16 << 20) / GuestMemory.pageSize)
        #expect(Set(regionPages).isSubset(of: Set(touched)))
        #expect(touched.count < handler.pageCount)
        #expect(handler.failure == nil)
    }

    @Test func eagerRestoreReadsAllMemoryFirstAndGivesTheSameResult() throws {
        let scratch = try ScratchDirectory()
        let before = try snapshotTestGuest(into: scratch.path)
        let (reason, console, machine) = try resumeTestGuest(try RestorePlan.load(directory: scratch.path, loading: .eager))
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(try checksum(after: "resumed checksum ", in: console) == before)
        #expect(machine.pageFaultHandler?.faultLog.isEmpty == true)
    }

    @Test func aVCPUAndHostThreadsRacingOnOnePageGetItFromOneRead() throws {
        let scratch = try ScratchDirectory()
        let before = try snapshotTestGuest(into: scratch.path)
        let state = try RestorePlan.load(directory: scratch.path).state
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: scratch.file(MachineSnapshot.memoryFileName))))
        // A slow source: the guest's first page (its code at 1 MiB) is still being fetched while the
        // host threads fault on it too.
        let source = try CountingPageSource(image: image, delayMicroseconds: 20_000)
        let codePage = (1 << 20) / GuestMemory.pageSize
        let racers = DispatchGroup()
        let (reason, console, machine) = try resumeTestGuest(RestorePlan(state: state, pages: source, fetchThreads: 2)) { machine in
            for _ in 0..<4 {
                racers.enter()
                Thread.detachNewThread {
                    _ = try? machine.memory.load(UInt32.self, at: UInt64(codePage * GuestMemory.pageSize))
                    racers.leave()
                }
            }
        }
        #expect(racers.wait(timeout: .now() + 30) == .success)
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(try checksum(after: "resumed checksum ", in: console) == before)
        #expect(source.reads(of: codePage) == 1)
        #expect(machine.pageFaultHandler?.faultLog.filter { $0.page == codePage }.count == 1)
    }

    @Test func aDamagedPageStopsTheVMWithAClearErrorInsteadOfMappingIt() throws {
        let scratch = try ScratchDirectory()
        _ = try snapshotTestGuest(into: scratch.path)
        // Flip one byte in the first data page of the guest's region (8 MiB).
        let path = scratch.file(MachineSnapshot.memoryFileName)
        let fd = open(path, O_RDWR)
        #expect(fd >= 0)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, off_t(8 << 20) + 100) == 1)
        byte ^= 0x40
        #expect(pwrite(fd, &byte, 1, off_t(8 << 20) + 100) == 1)
        close(fd)
        let (reason, console, _) = try resumeTestGuest(try RestorePlan.load(directory: scratch.path))
        guard case let .failure(message) = reason else {
            Issue.record("expected a failure, got \(reason); console: \(console)")
            return
        }
        #expect(message.contains("damaged"), "\(message)")
        #expect(message.contains("page \((8 << 20) / GuestMemory.pageSize)"), "\(message)")
        #expect(!console.contains("resumed checksum"))
    }

    /// Drains the UART's receive buffer the way a guest driver does (data-ready bit, then RBR).
    static func pendingConsoleInput(_ serial: Serial8250) -> [UInt8] {
        var bytes: [UInt8] = []
        var register: UInt8 = 0
        while bytes.count < 1024 {
            withUnsafeMutableBytes(of: &register) { serial.read(offset: Serial8250.lineStatusOffset, into: $0) }
            guard register & Serial8250.lineStatusDataReady != 0 else { break }
            withUnsafeMutableBytes(of: &register) { serial.read(offset: Serial8250.dataOffset, into: $0) }
            bytes.append(register)
        }
        return bytes
    }

    @Test func aResumedGuestFindsTheResumeLineInItsConsoleInputAndABootedOneDoesNot() throws {
        let scratch = try ScratchDirectory()
        _ = try snapshotTestGuest(into: scratch.path)
        let resumed = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: try RestorePlan.load(directory: scratch.path)),
                                  logger: Logger(label: "test-restore"))
        #expect(Self.pendingConsoleInput(resumed.serial) == Array("STREAMVM-RESUMED\n".utf8))
        var quiet = try RestorePlan.load(directory: scratch.path)
        quiet.consoleInputOnResume = []
        let silent = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: quiet), logger: Logger(label: "test-restore"))
        #expect(Self.pendingConsoleInput(silent.serial).isEmpty)
        let booted = try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: "mode=snapshot mib=1"),
                                 logger: Logger(label: "test-boot"))
        #expect(Self.pendingConsoleInput(booted.serial).isEmpty)
    }
}

@Suite struct SnapshotFileTests {
    /// A syntactically complete snapshot with kernel structs of the right size (zeros), for format
    /// tests that need no /dev/kvm.
    static func sampleSnapshot(pages: Int = 4) -> MachineSnapshot {
        func zeros<T>(_: T.Type) -> Data { Data(count: MemoryLayout<T>.size) }
        var chips: [Data] = []
        for id in VirtualMachine.irqchipIDs {
            var chip = kvm_irqchip()
            chip.chip_id = id
            chips.append(KernelBlob.encode(chip))
        }
        var digests = Data(count: pages * 8)
        digests[8] = 0x2a // page 1 holds data
        let vcpu = VCPUState(registers: zeros(kvm_regs.self), specialRegisters: zeros(kvm_sregs.self), fpu: zeros(kvm_fpu.self),
                             xsave: zeros(kvm_xsave.self), xcrs: nil, debugRegisters: nil, multiprocessingState: zeros(kvm_mp_state.self),
                             localAPIC: zeros(kvm_lapic_state.self), events: zeros(kvm_vcpu_events.self),
                             msrs: [.init(index: 0x10, value: 12345)], cpuid: [[0, 0, 0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69]])
        return MachineSnapshot(format: MachineSnapshot.formatName, version: MachineSnapshot.currentVersion,
                               memorySize: pages * GuestMemory.pageSize, vcpuCount: 1, vcpus: [vcpu],
                               platform: PlatformState(irqchips: chips, pit: zeros(kvm_pit_state2.self), clock: zeros(kvm_clock_data.self)),
                               devices: [DeviceStateRecord(id: "serial0", kind: "serial8250", state: String(decoding: try! JSONEncoder().encode(Serial8250.State()), as: UTF8.self))],
                               disks: [DiskReference(device: "virtio-blk0", size: 1 << 20, readOnly: false,
                                                     backend: BlockBackendReference(kind: "raw-file", path: "/images/disk.img"))],
                               memory: .init(size: pages * GuestMemory.pageSize, pageSize: GuestMemory.pageSize, dataPages: 1, pageDigests: digests))
    }

    @Test func stateRoundTripsThroughJSON() throws {
        let snapshot = Self.sampleSnapshot()
        let data = try snapshot.encoded()
        #expect(try MachineSnapshot.decode(data) == snapshot)
        #expect(try snapshot.encoded() == data, "encoding is deterministic")
    }

    /// Version 1 kept a serial UART and a virtio array; it still loads, as per-device records under
    /// the ids today's machines register (serial0, virtio-blk0, ...).
    @Test func versionOneDeviceStateIsReadAsRecordsKeyedByDeviceID() throws {
        var object = try #require(try JSONSerialization.jsonObject(with: Self.sampleSnapshot().encoded()) as? [String: Any])
        let encoder = JSONEncoder()
        var serial = Serial8250.State()
        serial.scratch = 0x5a
        let transport = VirtioMMIOTransport.State(queues: [Virtqueue(maximumSize: 256)])
        object["version"] = 1
        object["devices"] = ["serial": try JSONSerialization.jsonObject(with: encoder.encode(serial)),
                             "virtio": [try JSONSerialization.jsonObject(with: encoder.encode(transport))]]
        object.removeValue(forKey: "disks")
        let legacy = try MachineSnapshot.decode(try JSONSerialization.data(withJSONObject: object))
        #expect(legacy.version == 1)
        #expect(legacy.devices.map(\.id) == ["serial0", "virtio-blk0"])
        #expect(legacy.devices.map(\.kind) == ["serial8250", "virtio-mmio/2"])
        #expect(try JSONDecoder().decode(Serial8250.State.self, from: Data(legacy.devices[0].state.utf8)) == serial)
        #expect(try JSONDecoder().decode(VirtioMMIOTransport.State.self, from: Data(legacy.devices[1].state.utf8)) == transport)
        #expect(legacy.disks.isEmpty)
    }

    @Test func truncatedOrDamagedStateGivesAClearError() throws {
        let data = try Self.sampleSnapshot().encoded()
        for damaged in [data.prefix(data.count / 2), Data("{}".utf8), Data()] {
            #expect {
                _ = try MachineSnapshot.decode(Data(damaged))
            } throws: { error in
                "\(error)".contains("vmstate.json is damaged or not a StreamVM snapshot")
            }
        }
    }

    @Test func wrongVersionSizesAndCountsAreRefusedWithTheReason() throws {
        var newer = Self.sampleSnapshot()
        newer.version = MachineSnapshot.currentVersion + 1
        #expect(throws: HypervisorError.invalidSnapshot("format version \(newer.version); this streamvm reads versions 1-\(MachineSnapshot.currentVersion) (re-create the snapshot with this version)")) {
            try newer.validate()
        }
        #expect { _ = try MachineSnapshot.decode(try newer.encoded()) } throws: { "\($0)".contains("format version \(newer.version)") }
        var shortRegisters = Self.sampleSnapshot()
        shortRegisters.vcpus[0].registers = Data(count: 10)
        #expect { try shortRegisters.validate() } throws: { "\($0)".contains("vcpu 0 registers is 10 bytes") }
        var wrongDigests = Self.sampleSnapshot()
        wrongDigests.memory.pageDigests.removeLast()
        #expect { try wrongDigests.validate() } throws: { "\($0)".contains("page digest table") }
        var wrongCount = Self.sampleSnapshot()
        wrongCount.memory.dataPages = 3
        #expect { try wrongCount.validate() } throws: { "\($0)".contains("data pages") }
        var wrongFormat = Self.sampleSnapshot()
        wrongFormat.format = "something-else"
        #expect { try wrongFormat.validate() } throws: { "\($0)".contains("format is") }
    }

    @Test func fileSourceRefusesATruncatedImageAndADamagedPage() throws {
        let scratch = try ScratchDirectory()
        let pages = 4
        var image = [UInt8](repeating: 0, count: pages * GuestMemory.pageSize)
        for index in GuestMemory.pageSize..<(2 * GuestMemory.pageSize) { image[index] = UInt8(truncatingIfNeeded: index * 7) }
        let digests = (0..<pages).map { page in image[(page * GuestMemory.pageSize)..<((page + 1) * GuestMemory.pageSize)].withUnsafeBytes { PageDigest.digest($0) } }
        var table = Data()
        for digest in digests { withUnsafeBytes(of: digest.littleEndian) { table.append(contentsOf: $0) } }
        let description = MachineSnapshot.MemoryImage(size: image.count, pageSize: GuestMemory.pageSize, dataPages: 1, pageDigests: table)
        let path = scratch.file("memory.img")

        try Data(image.prefix(image.count - 1)).write(to: URL(fileURLWithPath: path))
        #expect { _ = try SnapshotFilePageSource(path: path, image: description) } throws: { "\($0)".contains("truncated") }

        try Data(image).write(to: URL(fileURLWithPath: path))
        let source = try SnapshotFilePageSource(path: path, image: description)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: GuestMemory.pageSize, alignment: 8)
        defer { buffer.deallocate() }
        #expect(try source.readPage(0, into: buffer) == .zero)
        #expect(try source.readPage(1, into: buffer) == .data)
        #expect(Array(buffer) == Array(image[GuestMemory.pageSize..<(2 * GuestMemory.pageSize)]))

        image[GuestMemory.pageSize + 5] ^= 1
        try Data(image).write(to: URL(fileURLWithPath: path))
        let damaged = try SnapshotFilePageSource(path: path, image: description)
        #expect { _ = try damaged.readPage(1, into: buffer) } throws: { "\($0)".contains("damaged") && "\($0)".contains("guest page 1") }
    }
}
