import Hypervisor
import Synchronization

/// One frame held by the switch: its bytes (a pooled buffer, reused across frames), offload facts,
/// and when it may leave the sender's link (rate limit and delay applied).
struct QueuedFrame {
    var bytes: [UInt8]
    var offload: FrameOffload
    /// Monotonic nanoseconds at which the frame leaves the delay line.
    var due: UInt64
}

/// Reusable frame buffers so the hot path does not allocate: a sender copies into a buffer taken
/// here, the switch thread gives it back after delivery.
final class FramePool: Sendable {
    private let free = Mutex<[[UInt8]]>([])
    private let keep: Int

    init(keep: Int = 4096) { self.keep = keep }

    func take(copying frame: UnsafeRawBufferPointer) -> [UInt8] {
        var buffer = free.withLock { $0.popLast() } ?? []
        buffer.removeAll(keepingCapacity: true)
        buffer.append(contentsOf: frame)
        return buffer
    }

    func giveBack(_ buffer: [UInt8]) {
        // Offload-sized buffers are not kept: a few jumbo frames must not pin megabytes.
        guard buffer.capacity <= 4096 else { return }
        let keep = keep
        free.withLock { if $0.count < keep { $0.append(buffer) } }
    }
}

/// A growable ring of frames: FIFO without shifting or reallocating once warm.
struct FrameRing {
    private var slots: [QueuedFrame?] = Array(repeating: nil, count: 16)
    private var head = 0
    private(set) var count = 0
    private(set) var bytes = 0

    var isEmpty: Bool { count == 0 }
    var first: QueuedFrame? { count == 0 ? nil : slots[head] }

    mutating func append(_ frame: QueuedFrame) {
        if count == slots.count { grow() }
        slots[(head + count) % slots.count] = frame
        count += 1
        bytes += frame.bytes.count
    }

    mutating func popFirst() -> QueuedFrame? {
        guard count > 0 else { return nil }
        let frame = slots[head].take()
        head = (head + 1) % slots.count
        count -= 1
        bytes -= frame?.bytes.count ?? 0
        return frame
    }

    private mutating func grow() {
        var larger = [QueuedFrame?](repeating: nil, count: slots.count * 2)
        for index in 0..<count { larger[index] = slots[(head + index) % slots.count].take() }
        slots = larger
        head = 0
    }
}
