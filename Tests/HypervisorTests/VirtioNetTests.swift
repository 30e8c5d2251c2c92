import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
@testable import Hypervisor

/// A test peer on the far end of the wire: every frame the guest transmits is recorded and sent back
/// with its MACs swapped (an echo peer, not a stand-in for the switch). It delivers from inside
/// `transmit`, on the thread running the guest's transmit queue, which is the re-entrant case the
/// device's per-queue locking must take; frames the guest has no buffer for wait for
/// `receiveBuffersAvailable`.
final class EchoPeer: NetworkBackend, @unchecked Sendable {
    private struct State {
        var endpoint: (any NetworkEndpoint)?
        var transmitted: [(frame: [UInt8], offload: FrameOffload)] = []
        var waiting: [(frame: [UInt8], offload: FrameOffload)] = []
        var disconnected = false
        var offering = false
        var offerAgain = false
    }
    private let state = Mutex(State())

    var transmitted: [(frame: [UInt8], offload: FrameOffload)] { state.withLock { $0.transmitted } }
    var disconnected: Bool { state.withLock { $0.disconnected } }

    func connect(_ endpoint: any NetworkEndpoint) { state.withLock { $0.endpoint = endpoint } }

    func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        var echo = Array(frame)
        for index in 0..<6 { echo.swapAt(index, index + 6) }
        state.withLock {
            $0.transmitted.append((Array(frame), offload))
            $0.waiting.append((echo, offload))
        }
        offerWaiting()
        return true
    }

    func receiveBuffersAvailable() { offerWaiting() }

    func disconnect() { state.withLock { $0.disconnected = true } }

    /// Offers waiting frames in order until the guest has no buffer (deliver is called without our lock).
    /// The transmit and receive queues notify on different threads, so only one thread offers at a
    /// time: a second caller leaves a note and the offering thread goes round again. Two offering
    /// threads would hand the guest the same frame twice and then pop one frame too many.
    private func offerWaiting() {
        let mayOffer = state.withLock { state -> Bool in
            if state.offering { state.offerAgain = true; return false }
            state.offering = true
            return true
        }
        guard mayOffer else { return }
        while true {
            while let (endpoint, next) = state.withLock({ state -> ((any NetworkEndpoint), (frame: [UInt8], offload: FrameOffload))? in
                guard let endpoint = state.endpoint, let first = state.waiting.first else { return nil }
                return (endpoint, first)
            }) {
                guard next.frame.withUnsafeBytes({ endpoint.deliver($0, offload: next.offload) }) else { break }
                state.withLock { _ = $0.waiting.removeFirst() }
            }
            let done = state.withLock { state -> Bool in
                if state.offerAgain { state.offerAgain = false; return false }
                state.offering = false
                return true
            }
            if done { return }
        }
    }
}

/// Boots the test guest in a virtio-net mode with `peer` on the wire.
func bootNetGuest(_ arguments: String, peer: EchoPeer, eventFDs: Bool = true) throws -> (reason: StopReason, console: String, machine: Machine, net: VirtioNet) {
    let mac = try MACAddress(parsing: "52:54:00:12:34:56")
    let device = VirtioNetDevice(backend: peer, mac: mac)
    var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()), commandLine: arguments)
    configuration.useEventFDs = eventFDs
    configuration.devices = [device]
    let machine = try Machine(configuration: configuration, logger: Logger(label: "test-net"))
    let reason = machine.run(timeout: .seconds(90))
    return (reason, machine.console.output, machine, device.device)
}

@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: virtio-net guest tests skipped"),
       .timeLimit(.minutes(3)), .offCooperativePool)
struct VirtioNetGuestTests {
    /// The guest's frame `seq` as the test guest builds it (guest.c net_send).
    static func expectedFrame(_ seq: UInt32) -> [UInt8] {
        let size = 60 + Int(seq * 397) % (1514 - 60 + 1)
        var frame = [UInt8](repeating: 0, count: size)
        frame[0..<6] = [0x02, 0, 0, 0, 0, 0x01]
        frame[6..<12] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
        frame[12] = 0x88
        frame[13] = 0xb5
        for index in 14..<size { frame[index] = UInt8(truncatingIfNeeded: Int(seq) * 31 + index * 7 + (index >> 8)) }
        withUnsafeBytes(of: seq.littleEndian) { frame.replaceSubrange(14..<18, with: $0) }
        frame[18] = 0
        frame[19] = 0
        return frame
    }

    @Test(arguments: [true, false])
    func framesGoOutAndComeBackWithEveryByteIntact(eventFDs: Bool) throws {
        let peer = EchoPeer()
        let (reason, console, machine, net) = try bootNetGuest("mode=net count=64", peer: peer, eventFDs: eventFDs)
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(console.contains("ok   every frame came back with every byte intact"), "console: \(console)")
        // Host side: every transmitted frame, byte for byte, with the offload the guest asked for.
        let frames = peer.transmitted
        #expect(frames.count == 64)
        for (seq, sent) in frames.enumerated() {
            #expect(sent.frame == Self.expectedFrame(UInt32(seq)), "frame \(seq)")
            let expected = seq % 4 == 0 ? FrameOffload(needsChecksum: true, checksumStart: 14, checksumOffset: 4) : .none
            #expect(sent.offload == expected, "frame \(seq) offload")
        }
        let counts = net.networkCounters
        let bytes = UInt64(frames.reduce(0) { $0 + $1.frame.count })
        #expect(counts.framesTransmitted == 64 && counts.framesReceived == 64)
        #expect(counts.bytesTransmitted == bytes && counts.bytesReceived == bytes)
        #expect(counts.refusedChains == 0 && counts.receiveDropped == 0 && counts.transmitDropped == 0)
        #expect(peer.disconnected, "the machine's end released the backend")
        let metrics = machine.metrics().devices.first { $0.name == "virtio-net0" }
        #expect(metrics?.counters.requests == 128)
    }

    @Test func hostileChainsNeedAResetOrAreRefusedAndTheDeviceWorksAfterwards() throws {
        let peer = EchoPeer()
        let (reason, console, machine, net) = try bootNetGuest("mode=nethostile", peer: peer)
        #expect(reason == .powerOff(code: 0), "console: \(console)")
        #expect(!console.contains("FAIL"), "console: \(console)")
        let refusals = net.requestRefusals?.values ?? [:]
        #expect(refusals["transmit_frame_too_large"] == 1)
        #expect(refusals["transmit_frame_too_short"] == 1)
        let errors = machine.metrics().devices.first { $0.name == "virtio-net0" }?.guestErrors ?? [:]
        #expect(errors["descriptor_chain_loops"] == 1)
        #expect(errors["wrong_buffer_direction"] == 2)
        #expect(errors["buffer_outside_memory"] == 1)
        #expect(errors["zero_length_buffer"] == 1)
    }
}

/// The device's parts without a guest: header layout, MAC parsing, checksum completion.
struct VirtioNetUnitTests {
    @Test func macAddressesParseAndRefuseWhatNoDeviceCanUse() throws {
        #expect(try MACAddress(parsing: "52:54:00:AB:cd:01").description == "52:54:00:ab:cd:01")
        #expect(throws: MACAddressError.self) { try MACAddress(parsing: "52:54:00:ab:cd") }
        #expect(throws: MACAddressError.self) { try MACAddress(parsing: "52:54:00:ab:cd:0g") }
        #expect(throws: MACAddressError.multicast("01:00:5e:00:00:01")) { try MACAddress(parsing: "01:00:5e:00:00:01") }
        #expect(throws: MACAddressError.allZero) { try MACAddress(parsing: "00:00:00:00:00:00") }
    }

    @Test func aCompletedChecksumSumsToAllOnes() {
        var bytes: [UInt8] = (0..<101).map { UInt8(truncatingIfNeeded: $0 * 13 + 5) }
        bytes[20] = 0
        bytes[21] = 0
        let done = bytes.withUnsafeMutableBytes { InternetChecksum.complete($0, start: 14, offset: 6) }
        #expect(done)
        #expect(bytes.withUnsafeBytes { InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: $0[14...])) } == 0xffff)
        #expect(!bytes.withUnsafeMutableBytes { InternetChecksum.complete($0, start: 14, offset: 200) })
    }

    @Test func theHeaderCarriesTheOffloadBothWays() {
        let offload = FrameOffload(needsChecksum: true, checksumStart: 34, checksumOffset: 16,
                                   segmentation: .tcpIPv4, segmentSize: 1448, headerLength: 66)
        var header = VirtioNetHeader(offload: offload)
        header.numberOfBuffers = 3
        let bytes = header.bytes
        #expect(bytes == [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 3, 0])
        let parsed = bytes.withUnsafeBytes { VirtioNetHeader($0) }
        #expect(parsed.gsoSize == 1448 && parsed.headerLength == 66 && parsed.checksumStart == 34 && parsed.numberOfBuffers == 3)
    }
}

@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: virtio-net snapshot test skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct VirtioNetSnapshotTests {
    /// A guest paused and saved mid-stream, restored onto a new echo peer, keeps its link: its
    /// negotiated queues carry on and every remaining frame comes back intact.
    @Test func aRestoredNetGuestKeepsExchangingFrames() throws {
        let scratch = try ScratchDirectory()
        let mac = try MACAddress(parsing: "52:54:00:12:34:56")
        let firstPeer = EchoPeer()
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try TestGuest.image.get()),
                                                 commandLine: "mode=net count=600")
        configuration.devices = [VirtioNetDevice(backend: firstPeer, mac: mac)]
        let original = try Machine(configuration: configuration, logger: Logger(label: "test-net-snapshot"))
        try original.start()
        let deadline = ContinuousClock.now + .seconds(60)
        while firstPeer.transmitted.count < 100, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        try original.pause()
        let sentBefore = firstPeer.transmitted.count
        #expect(sentBefore >= 100 && sentBefore < 600, "pause point: \(sentBefore) frames, console: \(original.console.output)")
        try original.saveSnapshot(to: scratch.path)
        original.stop(.stopRequested)
        _ = original.waitUntilStopped(timeout: .seconds(30))

        let secondPeer = EchoPeer()
        var restoring = MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: try RestorePlan.load(directory: scratch.path))
        restoring.devices = [VirtioNetDevice(backend: secondPeer, mac: mac)]
        let restored = try Machine(configuration: restoring, logger: Logger(label: "test-net-restore"))
        // 500 round trips take seconds here, minutes on a CI host busy with other VMs.
        let reason = restored.run(timeout: .seconds(240))
        #expect(reason == .powerOff(code: 0), "console: \(restored.console.output)")
        #expect(restored.console.output.contains("ok   every frame came back with every byte intact"), "console: \(restored.console.output)")
        let resent = secondPeer.transmitted
        #expect(resent.count > 0 && resent.count <= 600 - sentBefore + 1)
        // The restored guest carries on where it stopped: its frames are the next sequence numbers.
        for sent in resent {
            let seq = sent.frame[14..<18].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
            #expect(sent.frame == VirtioNetGuestTests.expectedFrame(seq), "frame \(seq)")
        }
    }
}
