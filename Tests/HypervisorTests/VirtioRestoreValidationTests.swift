import Foundation
import Logging
import Testing
import TestSupport
@testable import Hypervisor

/// Regression tests from fuzzing (Fuzz/fuzz-vmstate): a virtio-mmio state in vmstate.json is as
/// hostile as any file. A restored machine kicks every queue at once, so a saved "ready" queue whose
/// rings lie outside guest RAM used to reach the ring arithmetic unchecked: `availableRing + 2`
/// overflowed and trapped the VMM (Swift runtime failure in `Virtqueue.popAvailable`). A restore now
/// refuses such a state, naming the queue, and keeps the transport as it was.
struct VirtioRestoreValidationTests {
    /// The transport state of the crashing input: the snapshot's own virtio-blk state with the ready
    /// queue's available ring moved to 2^64 - 1.
    static func savedState(availableRing: UInt64, size: UInt16 = 8) -> Data {
        Data("""
        {"configGeneration":1,"deviceFeaturesSelect":1,"driverFeatures":4294967296,"driverFeaturesSelect":0,\
        "interruptStatus":0,"queueSelect":0,"queues":[{"availableRing":\(availableRing),"descriptorTable":4096,\
        "isReady":true,"maximumSize":256,"nextAvailable":512,"nextUsed":512,"size":\(size),"usedRing":8192}],"status":15}
        """.utf8)
    }

    func transport(_ directory: TemporaryDirectory) throws -> (VirtioMMIOTransport, GuestMemory) {
        let path = directory.sub("disk.img")
        _ = FileManager.default.createFile(atPath: path, contents: Data(count: 16 * 512))
        let memory = try GuestMemory(size: 64 << 10)
        let transport = VirtioMMIOTransport(device: VirtioBlock(backend: try RawFileBackend(path: path, readOnly: false)),
                                            memory: memory, interrupt: EdgeCounter(), logger: Logger(label: "test"))
        return (transport, memory)
    }

    @Test func aReadyQueueWithRingsBeyondMemoryIsRefusedAndNeverRun() throws {
        let directory = try TemporaryDirectory()
        let (transport, _) = try transport(directory)
        let error = #expect(throws: HypervisorError.self) {
            try transport.restoreState(Self.savedState(availableRing: UInt64.max))
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("virtio queue 0 is ready"))
        // The refused state was not installed: the transport is still freshly reset, and a kick (what
        // a restored machine does first) finds nothing to run instead of trapping.
        #expect(transport.status == 0)
        transport.notify(queue: 0)
    }

    @Test func aReadyQueueOfAnImpossibleSizeIsRefused() throws {
        let directory = try TemporaryDirectory()
        let (transport, _) = try transport(directory)
        #expect(throws: HypervisorError.self) { try transport.restoreState(Self.savedState(availableRing: 0x3000, size: 3)) }
        #expect(throws: HypervisorError.self) { try transport.restoreState(Self.savedState(availableRing: 0x3000, size: 512)) }
    }

    @Test func aValidReadyQueueStillRestoresAndRuns() throws {
        let directory = try TemporaryDirectory()
        let (transport, memory) = try transport(directory)
        try transport.restoreState(Self.savedState(availableRing: 0x3000))
        #expect(transport.status == 15)
        // avail.idx equals what the saved device consumed (512): the kick finds nothing pending and
        // the device stays healthy.
        try memory.store(UInt16(512), at: 0x3002)
        transport.notify(queue: 0)
        #expect(transport.status & VirtioStatus.deviceNeedsReset == 0)
    }
}
