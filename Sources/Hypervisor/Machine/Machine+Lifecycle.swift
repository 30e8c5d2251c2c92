import CKVM
import Foundation
import Glibc

/// Start, pause, resume, stop and join. vCPUs run on dedicated threads; a pause parks every one of
/// them outside KVM_RUN (see `VCPUParking`) and quiesces the virtio I/O threads, so guest memory,
/// vCPU registers and device state hold still until `resume` — the state a snapshot needs.
extension Machine {
    public var state: MachineState {
        if stopReason.withLock({ $0 != nil }) { return .stopped }
        switch phase.withLock({ $0 }) {
        case .notStarted: return .notStarted
        case .running: return .running
        case .paused: return .paused
        }
    }

    /// Starts the vCPU threads and the virtio I/O threads and returns at once. Call once.
    public func start() throws {
        lifecycleLock.lock()
        defer { lifecycleLock.unlock() }
        guard phase.withLock({ $0 }) == .notStarted, stopReason.withLock({ $0 == nil }) else {
            throw HypervisorError.invalidState("a machine can only be started once (it is \(state.rawValue.lowercased()))")
        }
        phase.withLock { $0 = .running }
        startedAt.withLock { $0 = .now }
        doorbells.forEach { $0.start() }
        // A restored machine's queues may hold requests whose notification the saved machine
        // consumed but had not served when it was paused.
        if configuration.restore != nil { doorbells.forEach { $0.kick() } }
        for vcpu in vcpus {
            let thread = Thread { [self] in
                Self.unblockKickSignal()
                threadIDs.withLock { $0[vcpu.index] = pthread_self() }
                do {
                    try configuration.vcpuThreadStarted?(vcpu.index, ckvm_thread_id())
                    runLoop(vcpu)
                } catch {
                    stop(.failure("vCPU \(vcpu.index) thread set-up: \(error)"))
                }
                threadsFinished.signal()
            }
            thread.name = "vcpu\(vcpu.index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Waits until the machine stops (or `timeout` passes: it is then stopped as `.timedOut`), joins
    /// every vCPU and I/O thread, and returns why it stopped. Further calls return the same reason.
    public func waitUntilStopped(timeout: Duration?) -> StopReason {
        guard phase.withLock({ $0 }) != .notStarted else { return .failure("the machine was never started") }
        joinLock.lock()
        defer { joinLock.unlock() }
        if hasFinishedRunning { return currentStopReason }
        if let timeout {
            let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            if stopped.wait(timeout: .now() + .nanoseconds(Int(min(nanoseconds, Int64(Int.max))))) == .timedOut {
                stop(.timedOut)
            } else {
                stopped.signal() // stays signalled for a later caller (one that returned without joining)
            }
        } else {
            stopped.wait()
            stopped.signal()
        }
        // Join every vCPU thread, kicking until each has left KVM_RUN. The threads hold `self`, so
        // guest memory outlives them even if one is wedged in the kernel past the join limit.
        let joinDeadline = ContinuousClock.now + Self.joinLimit
        for _ in vcpus {
            while threadsFinished.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
                guard ContinuousClock.now < joinDeadline else {
                    logger.error("a vCPU thread did not leave KVM_RUN within \(Self.joinLimit); returning without it")
                    return currentStopReason
                }
                kickAll()
            }
        }
        doorbells.forEach { $0.waitUntilStopped() }
        devices.flushGuestErrorWarnings()
        devices.runStopActions()
        finishedRunning.withLock { $0 = true }
        return currentStopReason
    }

    /// Runs the guest until it stops or `timeout` passes; returns why it stopped (`start` followed
    /// by `waitUntilStopped`).
    public func run(timeout: Duration? = nil) -> StopReason {
        do {
            try start()
        } catch {
            return .failure("\(error)")
        }
        return waitUntilStopped(timeout: timeout)
    }

    /// Ends the run with `reason` (the first reason wins). Safe from any thread, in any state
    /// (a paused machine's parked vCPUs are released and return without entering the guest).
    public func stop(_ reason: StopReason) {
        let first = stopReason.withLock { current -> Bool in
            guard current == nil else { return false }
            current = reason
            return true
        }
        guard first else { return }
        parking.stop()
        kickAll()
        doorbells.forEach { $0.stop() }
        stopped.signal()
    }

    /// Pauses a running machine. Returns once every vCPU has left KVM_RUN, completed its pending
    /// port/MMIO exit and parked, and every virtio I/O thread has finished the queue run it was in:
    /// from then on nothing changes guest memory, vCPU or device state until `resume` or `stop`.
    /// Call it from a host thread, never from a device callback (a vCPU cannot wait for itself to park).
    public func pause() throws {
        lifecycleLock.lock()
        defer { lifecycleLock.unlock() }
        guard state == .running else { throw HypervisorError.invalidState("only a running machine can be paused (it is \(state.rawValue.lowercased()))") }
        let caller = pthread_self()
        guard !threadIDs.withLock({ $0.contains { $0.map { pthread_equal($0, caller) != 0 } ?? false } }) else {
            throw HypervisorError.invalidState("pause was called on a vCPU thread (from a device callback), which cannot wait for itself to park")
        }
        parking.requestPause()
        let parked = parking.waitUntilParked(deadline: Date(timeIntervalSinceNow: Double(Self.joinLimit.components.seconds))) { kickAll() }
        guard parked else {
            parking.resume()
            if state == .stopped { throw HypervisorError.invalidState("the machine stopped while pausing: \(currentStopReason)") }
            throw HypervisorError.invalidState("a vCPU did not leave the guest within \(Self.joinLimit) (blocked on a page fault or in the host kernel); the machine keeps running")
        }
        devices.pauseQueues()
        phase.withLock { $0 = .paused }
    }

    /// Lets a paused machine run on.
    public func resume() throws {
        lifecycleLock.lock()
        defer { lifecycleLock.unlock() }
        guard state == .paused else { throw HypervisorError.invalidState("only a paused machine can be resumed (it is \(state.rawValue.lowercased()))") }
        phase.withLock { $0 = .running }
        devices.resumeQueues()
        parking.resume()
    }

    /// Counters and timing, readable in any state from any thread.
    public func metrics() -> MachineMetrics {
        var exits: [VCPUExitKind: UInt64] = [:]
        let sums = exitCounters.reduce(into: [UInt64](repeating: 0, count: VCPUExitKind.allCases.count)) { sums, counters in
            for (index, value) in counters.values.enumerated() { sums[index] += value }
        }
        for (index, kind) in VCPUExitKind.allCases.enumerated() { exits[kind] = sums[index] }
        let uptime = startedAt.withLock { $0 }.map { ContinuousClock.now - $0 } ?? .zero
        return MachineMetrics(uptime: uptime, state: state, vcpuCount: vcpus.count, exits: exits,
                              pageFaultsServed: pageFaultHandler?.faultsServed ?? 0,
                              pagesInstalled: pageFaultHandler?.presentPageCount ?? 0,
                              devices: devices.deviceMetrics())
    }

    var currentStopReason: StopReason { stopReason.withLock { $0 } ?? .failure("stopped without a reason") }
}
