import Glibc
import Hypervisor
import HostNetwork
import Synchronization

/// Frames for the tests: Ethernet header, a sequence number and a byte pattern derived from it,
/// so a receiver can check every byte.
enum TestFrames {
    static let etherType: UInt16 = 0x88B5  // IEEE local experimental

    static func make(to destination: MACAddress, from source: MACAddress, sequence: UInt32, length: Int = 128) -> [UInt8] {
        precondition(length >= 18)
        var frame = destination.bytes + source.bytes + [UInt8(etherType >> 8), UInt8(etherType & 0xFF)]
        frame += withUnsafeBytes(of: sequence.bigEndian) { Array($0) }
        for index in frame.count..<length { frame.append(pattern(sequence: sequence, index: index)) }
        return frame
    }

    static func pattern(sequence: UInt32, index: Int) -> UInt8 { UInt8(truncatingIfNeeded: Int(sequence) &* 31 &+ index &* 7) }

    static func sequence(of frame: [UInt8]) -> UInt32 {
        UInt32(frame[14]) << 24 | UInt32(frame[15]) << 16 | UInt32(frame[16]) << 8 | UInt32(frame[17])
    }

    /// True when every byte after the sequence number is the pattern for that sequence.
    static func isIntact(_ frame: [UInt8]) -> Bool {
        let sequence = sequence(of: frame)
        return (18..<frame.count).allSatisfy { frame[$0] == pattern(sequence: sequence, index: $0) }
    }

    static func send(_ frame: [UInt8], on port: SwitchPort, offload: FrameOffload = .none) -> Bool {
        frame.withUnsafeBytes { port.transmit($0, offload: offload) }
    }
}

func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// The guest end of a port in these tests: keeps every frame it is given with its arrival time.
/// With a receive budget it behaves like a guest with few receive buffers: it refuses frames when
/// the budget is used up until `post` adds buffers (and tells the port, as a device would).
final class RecordingEndpoint: NetworkEndpoint {
    struct Received {
        var bytes: [UInt8]
        var offload: FrameOffload
        var time: UInt64
    }

    private let state: Mutex<(frames: [Received], budget: Int?)>

    init(budget: Int? = nil) { state = Mutex((frames: [], budget: budget)) }

    func deliver(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        let now = monotonicNanoseconds()
        return state.withLock { state in
            if let budget = state.budget {
                guard budget > 0 else { return false }
                state.budget = budget - 1
            }
            state.frames.append(Received(bytes: Array(frame), offload: offload, time: now))
            return true
        }
    }

    /// Adds receive buffers and tells the backend.
    func post(_ buffers: Int, to port: SwitchPort) {
        state.withLock { $0.budget = ($0.budget ?? 0) + buffers }
        port.receiveBuffersAvailable()
    }

    var frames: [Received] { state.withLock { $0.frames } }
    var count: Int { state.withLock { $0.frames.count } }

    /// Waits until at least `count` frames arrived or `seconds` passed; returns the frames.
    @discardableResult
    func waitFor(_ count: Int, seconds: Double = 5) -> [Received] {
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        while self.count < count && monotonicNanoseconds() < deadline { usleep(1_000) }
        return frames
    }

    /// Waits until no frame arrived for `quiet` seconds (nothing more is coming).
    func settle(quiet: Double = 0.1) {
        var last = count
        while true {
            usleep(UInt32(quiet * 1e6))
            let now = count
            if now == last { return }
            last = now
        }
    }
}
