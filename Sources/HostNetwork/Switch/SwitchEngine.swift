import Foundation
import Glibc
import Hypervisor
import Logging
import Synchronization

/// The switch's one thread: takes due frames from the ports' send queues (round robin, a quantum
/// of bytes per port per turn), learns source MACs, forwards or floods, and delivers into the
/// receiving guests. A receiver without buffers gets a queue per sender, drained by deficit round
/// robin, so a flood to a slow guest only fills the flooder's share.
///
/// All mutable state here is touched only on the switch thread (hence `@unchecked Sendable`); other
/// threads only call `wake`, `portsChanged` and `stop`, which use atomics and a `WakeSignal`.
final class SwitchEngine: @unchecked Sendable {
    /// Bytes a port may forward per round-robin turn (about 43 full frames).
    static let quantum = 64 * 1024
    /// Wake this long before a due time and spin the rest: timer slack (50 µs by default) and
    /// wake-up latency would otherwise add to every delay.
    static let spinNanoseconds: UInt64 = 150_000

    private let name: String
    private let pool: FramePool
    private let portsSource: @Sendable () -> [SwitchPort]
    private let logger: Logger
    private let event = WakeSignal()
    private let sleeping = Atomic<Bool>(false)
    private let running = Atomic<Bool>(true)
    private let portsVersion = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)

    // Switch-thread state.
    private var ports: [SwitchPort?] = []
    private var seenVersion = -1
    private var macTable: MACTable
    private var roundRobinStart = 0
    private var batch: [QueuedFrame] = []
    private var scratch: [UInt8] = []
    /// receiveQueues[receiver][sender]: frames waiting for the receiver's buffers.
    private var receiveQueues: [[FrameRing]] = []
    private var deficits: [[Int]] = []
    private var receiverBlocked: [Bool] = []
    private var receiverTurn: [Int] = []

    init(name: String, macAgingNanoseconds: UInt64, pool: FramePool, ports: @escaping @Sendable () -> [SwitchPort], logger: Logger) {
        self.name = name
        self.pool = pool
        self.portsSource = ports
        self.logger = logger
        self.macTable = MACTable(agingNanoseconds: macAgingNanoseconds)
        batch.reserveCapacity(256)
    }

    func start() {
        started.store(true, ordering: .sequentiallyConsistent)
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "switch \(name)"
        thread.qualityOfService = .userInteractive
        thread.start()
    }

    func stop() {
        guard running.exchange(false, ordering: .sequentiallyConsistent) else { return }
        event.signal()
        if started.load(ordering: .sequentiallyConsistent) { finished.wait() }
    }

    /// Called after a frame was queued or buffers were posted: signals the thread only when the
    /// switch thread is (about to be) asleep, so a busy switch costs senders no system call.
    func wake() {
        if sleeping.exchange(false, ordering: .sequentiallyConsistent) { event.signal() }
    }

    func portsChanged() {
        portsVersion.wrappingAdd(1, ordering: .sequentiallyConsistent)
        event.signal()
    }

    // MARK: The loop

    private func run() {
        while running.load(ordering: .relaxed) {
            let now = MonotonicClock.now()
            syncPorts()
            macTable.expire(now: now)
            serveReadyReceivers()
            let forwarded = forwardDue(now: now)
            if forwarded { continue }
            sleepUntilWork()
        }
        for case let port? in ports { dropEverything(of: port) }
    }

    /// Picks up added and closed ports.
    private func syncPorts() {
        let version = portsVersion.load(ordering: .sequentiallyConsistent)
        let anyClosed = ports.contains { $0?.closed.load(ordering: .relaxed) == true }
        guard version != seenVersion || anyClosed else { return }
        seenVersion = version
        let current = portsSource()
        while ports.count < current.count {
            ports.append(current[ports.count])
            receiverBlocked.append(true)
            receiverTurn.append(0)
        }
        let count = ports.count
        for receiver in 0..<count {
            while receiveQueues.count <= receiver { receiveQueues.append([]); deficits.append([]) }
            while receiveQueues[receiver].count < count { receiveQueues[receiver].append(FrameRing()); deficits[receiver].append(0) }
        }
        for (index, port) in ports.enumerated() {
            guard let port, port.closed.load(ordering: .relaxed) else { continue }
            dropEverything(of: port)
            ports[index] = nil
            macTable.forget(port: index)
        }
    }

    /// Drops what a closed port had queued, in both directions, and counts it.
    private func dropEverything(of port: SwitchPort) {
        let index = port.index
        port.counters.countDrop(.portClosed, frames: port.drainAll(into: pool))
        guard index < receiveQueues.count else { return }
        for sender in receiveQueues[index].indices {
            while let frame = receiveQueues[index][sender].popFirst() {
                port.counters.countDrop(.portClosed)
                pool.giveBack(frame.bytes)
            }
        }
    }

    /// Forwards every frame that is due, a quantum per port per turn. Returns whether any was.
    private func forwardDue(now: UInt64) -> Bool {
        var any = false
        var progress = true
        while progress {
            progress = false
            let count = ports.count
            guard count > 0 else { return any }
            roundRobinStart = (roundRobinStart + 1) % count
            for step in 0..<count {
                let index = (roundRobinStart + step) % count
                guard let port = ports[index] else { continue }
                batch.removeAll(keepingCapacity: true)
                port.takeDue(now: now, quantum: Self.quantum, into: &batch)
                guard !batch.isEmpty else { continue }
                progress = true
                any = true
                for frame in batch { forward(frame, from: index, now: now) }
                batch.removeAll(keepingCapacity: true)
            }
        }
        return any
    }

    private func forward(_ frame: QueuedFrame, from sender: Int, now: UInt64) {
        let (destination, source) = frame.bytes.withUnsafeBytes { (EthernetFrame.destination($0), EthernetFrame.source($0)) }
        macTable.learn(source, port: sender, now: now)
        if !destination.isMulticast, let receiver = macTable.port(of: destination, now: now) {
            if receiver != sender, let port = ports[receiver] { send(frame, from: sender, to: port) }
        } else {
            for case let port? in ports where port.index != sender { send(frame, from: sender, to: port) }
        }
        pool.giveBack(frame.bytes)
    }

    /// Hands one frame to a receiver: finishes offloads the receiver cannot take, delivers at once
    /// when nothing is queued for it, else queues it in the sender's share of its receive queue.
    private func send(_ frame: QueuedFrame, from sender: Int, to receiver: SwitchPort) {
        if frame.offload.needsWork && !receiver.configuration.acceptsOffloads {
            if frame.offload.segmentation != .none {
                let delivered = SoftwareOffload.segment(frame.bytes, offload: frame.offload) { segment in
                    sendPlain(segment, from: sender, to: receiver)
                }
                if !delivered { receiver.counters.countDrop(.offloadUnsupported) }
            } else {
                scratch.removeAll(keepingCapacity: true)
                scratch.append(contentsOf: frame.bytes)
                SoftwareOffload.finishChecksum(&scratch, offload: frame.offload)
                let finished = scratch
                finished.withUnsafeBytes { sendPlain($0, from: sender, to: receiver) }
            }
            return
        }
        frame.bytes.withUnsafeBytes { bytes in
            deliverOrQueue(bytes, offload: receiver.configuration.acceptsOffloads ? frame.offload : .none, from: sender, to: receiver)
        }
    }

    private func sendPlain(_ bytes: UnsafeRawBufferPointer, from sender: Int, to receiver: SwitchPort) {
        deliverOrQueue(bytes, offload: .none, from: sender, to: receiver)
    }

    private func deliverOrQueue(_ bytes: UnsafeRawBufferPointer, offload: FrameOffload, from sender: Int, to receiver: SwitchPort) {
        let index = receiver.index
        if !receiverBlocked[index] && !hasBacklog(index) {
            if let endpoint = receiver.endpoint, endpoint.deliver(bytes, offload: offload) {
                receiver.counters.countOut(bytes: bytes.count)
                return
            }
            receiverBlocked[index] = true
        }
        // The receiver's limit is shared out among the ports that could send to it.
        let senders = max(1, ports.count - 1)
        let frameShare = max(1, receiver.configuration.queueLimitFrames / senders)
        let byteShare = max(receiver.configuration.maximumFrameLength, receiver.configuration.queueLimitBytes / senders)
        let queue = receiveQueues[index][sender]
        guard queue.count < frameShare, queue.bytes + bytes.count <= byteShare else {
            receiver.counters.countDrop(.receiveQueueFull)
            return
        }
        receiveQueues[index][sender].append(QueuedFrame(bytes: pool.take(copying: bytes), offload: offload, due: 0))
    }

    private func hasBacklog(_ receiver: Int) -> Bool { receiveQueues[receiver].contains { !$0.isEmpty } }

    /// Retries receivers that posted buffers: deficit round robin over their senders' queues.
    private func serveReadyReceivers() {
        for case let port? in ports where port.receiveReady.exchange(false, ordering: .sequentiallyConsistent) {
            drain(port)
        }
    }

    private func drain(_ receiver: SwitchPort) {
        let index = receiver.index
        receiverBlocked[index] = false
        guard let endpoint = receiver.endpoint else { receiverBlocked[index] = true; return }
        let senders = receiveQueues[index].count
        while hasBacklog(index) {
            for step in 0..<senders {
                let sender = (receiverTurn[index] + step) % senders
                guard !receiveQueues[index][sender].isEmpty else { deficits[index][sender] = 0; continue }
                deficits[index][sender] += EthernetFrame.defaultMaximumLength
                while let head = receiveQueues[index][sender].first, head.bytes.count <= deficits[index][sender] {
                    let accepted = head.bytes.withUnsafeBytes { endpoint.deliver($0, offload: head.offload) }
                    guard accepted else {
                        receiverBlocked[index] = true
                        receiverTurn[index] = sender
                        return
                    }
                    receiver.counters.countOut(bytes: head.bytes.count)
                    deficits[index][sender] -= head.bytes.count
                    pool.giveBack(receiveQueues[index][sender].popFirst()!.bytes)
                }
                if receiveQueues[index][sender].isEmpty { deficits[index][sender] = 0 }
            }
            receiverTurn[index] = (receiverTurn[index] + 1) % max(senders, 1)
        }
    }

    /// Sleeps until a frame is due, a sender wakes us or a receiver posts buffers. The last
    /// `spinNanoseconds` before a due time are spun, not slept, so delays stay accurate.
    private func sleepUntilWork() {
        sleeping.store(true, ordering: .sequentiallyConsistent)
        // Re-check after announcing sleep: a frame queued before the flag was set sent no signal.
        var nextDue: UInt64 = .max
        for case let port? in ports { if let due = port.nextDue { nextDue = min(nextDue, due) } }
        let readyReceiver = ports.contains { $0?.receiveReady.load(ordering: .sequentiallyConsistent) == true }
        let version = portsVersion.load(ordering: .sequentiallyConsistent)
        let now = MonotonicClock.now()
        if nextDue <= now || readyReceiver || version != seenVersion || !running.load(ordering: .relaxed) {
            sleeping.store(false, ordering: .sequentiallyConsistent)
            return
        }
        let remaining = nextDue == .max ? UInt64.max : nextDue - now
        if remaining > Self.spinNanoseconds {
            event.wait(until: remaining == .max ? nil : nextDue - Self.spinNanoseconds)
        } else {
            // Spin to the due time, still noticing new work.
            while MonotonicClock.now() < nextDue && sleeping.load(ordering: .sequentiallyConsistent) { sched_yield() }
        }
        sleeping.store(false, ordering: .sequentiallyConsistent)
    }
}
