import Hypervisor
import Synchronization

/// One port of a `NetworkSwitch`: the `NetworkBackend` a guest's virtio-net device talks to.
///
/// `transmit` runs on the device's thread: it checks the frame (length, source MAC, offload
/// metadata), gives it its due time from the port's rate limit and latency, and appends it to the
/// port's own send queue, which only this port fills: a flooding guest fills its own queue and then
/// loses its own frames. Everything after that (learning, forwarding, delivery) is the switch thread's.
public final class SwitchPort: NetworkBackend {
    public let configuration: PortConfiguration
    let index: Int
    let counters = PortCounters()
    private let pool: FramePool
    private let wakeSwitch: @Sendable () -> Void
    private let latencyNanoseconds: UInt64

    struct SendState {
        var queue = FrameRing()
        var pacer: LinkPacer
    }
    private let sendState: Mutex<SendState>
    private let endpointBox = Mutex<(any NetworkEndpoint)?>(nil)
    /// Set by `receiveBuffersAvailable` (and `connect`), consumed by the switch thread.
    let receiveReady = Atomic<Bool>(false)
    let closed = Atomic<Bool>(false)

    init(configuration: PortConfiguration, index: Int, pool: FramePool, wakeSwitch: @escaping @Sendable () -> Void) {
        self.configuration = configuration
        self.index = index
        self.pool = pool
        self.wakeSwitch = wakeSwitch
        self.latencyNanoseconds = UInt64((configuration.latencyMilliseconds * 1e6).rounded())
        self.sendState = Mutex(SendState(pacer: LinkPacer(rateBitsPerSecond: configuration.rateBitsPerSecond,
                                                          burstBytes: configuration.burstBytes)))
    }

    public var name: String { configuration.name }

    /// This port's counters now.
    public var statistics: PortStatistics { counters.snapshot(port: configuration.name, mac: configuration.mac) }

    // MARK: NetworkBackend (device side)

    public func connect(_ endpoint: any NetworkEndpoint) {
        endpointBox.withLock { $0 = endpoint }
        receiveReady.store(true, ordering: .sequentiallyConsistent)
        wakeSwitch()
    }

    public func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        guard !closed.load(ordering: .relaxed) else { counters.countDrop(.portClosed); return false }
        if let reason = rejection(of: frame, offload: offload) {
            counters.countDrop(reason)
            return false
        }
        let buffer = pool.take(copying: frame)
        let length = frame.count
        let limits = (frames: configuration.queueLimitFrames, bytes: configuration.queueLimitBytes)
        let latency = latencyNanoseconds
        let accepted = sendState.withLock { state -> Bool in
            guard state.queue.count < limits.frames, state.queue.bytes + length <= limits.bytes else { return false }
            let now = MonotonicClock.now()
            let due = state.pacer.departure(length: length, arrival: now) + latency
            state.queue.append(QueuedFrame(bytes: buffer, offload: offload, due: due))
            return true
        }
        guard accepted else {
            pool.giveBack(buffer)
            counters.countDrop(.queueFull)
            return false
        }
        counters.countIn(bytes: length)
        wakeSwitch()
        return true
    }

    public func receiveBuffersAvailable() {
        receiveReady.store(true, ordering: .sequentiallyConsistent)
        wakeSwitch()
    }

    public func disconnect() {
        guard !closed.exchange(true, ordering: .sequentiallyConsistent) else { return }
        endpointBox.withLock { $0 = nil }
        wakeSwitch()
    }

    /// Why a frame is refused before it is queued, or nil when it is acceptable.
    private func rejection(of frame: UnsafeRawBufferPointer, offload: FrameOffload) -> DropReason? {
        if frame.count < EthernetFrame.headerLength { return .runt }
        let limit = offload.segmentation == .none ? configuration.maximumFrameLength : EthernetFrame.maximumOffloadLength
        if frame.count > limit { return .oversized }
        if !offload.isConsistent(frameLength: frame.count) { return .badOffload }
        if let mac = configuration.mac, EthernetFrame.source(frame) != mac { return .spoofedSource }
        return nil
    }

    // MARK: Switch-thread side

    var endpoint: (any NetworkEndpoint)? { endpointBox.withLock { $0 } }

    /// When the first queued frame is due, or nil with nothing queued.
    var nextDue: UInt64? { sendState.withLock { $0.queue.first?.due } }

    /// Moves frames due by `now` into `batch`, at most about `quantum` bytes (one frame at least):
    /// the fair share of one round-robin turn.
    func takeDue(now: UInt64, quantum: Int, into batch: inout [QueuedFrame]) {
        sendState.withLock { state in
            var taken = 0
            while let head = state.queue.first, head.due <= now, taken < quantum {
                taken += head.bytes.count
                batch.append(state.queue.popFirst()!)
            }
        }
    }

    /// Empties the send queue (the port closed); returns how many frames were dropped.
    func drainAll(into pool: FramePool) -> UInt64 {
        sendState.withLock { state in
            var dropped: UInt64 = 0
            while let frame = state.queue.popFirst() {
                pool.giveBack(frame.bytes)
                dropped += 1
            }
            return dropped
        }
    }
}
