import Foundation
import Glibc
import Hypervisor

/// A Difference Engine (Gupta et al., OSDI 2008) for running machines, through the Hypervisor's
/// public memory API: KVM's dirty log drives an NRU clock per page; cold pages are copied, and
/// dropped (userfaultfd: the next touch faults to the machine's `GuestPageStore`) when they are zero,
/// identical to a reference page (shared across machines), similar to one (zstd delta with the
/// reference as prefix dictionary) or compressible. docs/dedup.md has the design and the figures.
///
/// A drop never loses a guest write: each batch is checked while the machine is paused (every
/// vCPU and virtio thread parked) against the dirty log and byte for byte against the copy that was
/// encoded, and only then dropped; the machine resumes right after.
public final class DedupEngine: @unchecked Sendable {
    public let configuration: DedupConfiguration
    let codec = PageCodec()
    let index = ReferenceIndex(pageSize: GuestMemory.pageSize)
    let counters = Locked(DedupStatistics())

    private final class Tracked {
        let machine: Machine
        let store: GuestPageStore
        /// Scans since the page was last written or faulted in (saturating).
        var age: [UInt8]
        /// Installed in guest RAM (a never-touched page is left alone: reading it would allocate it).
        var resident: [Bool]
        /// Dropped by the engine and not faulted back yet.
        var dropped: [Bool]
        /// Times the page faulted back after a drop (saturating at 8): the dirty log shows writes,
        /// not reads, so a page the guest only reads looks cold; each refault makes the engine wait
        /// `refaultBackoff` more scans before dropping it again.
        var refaults: [UInt8]
        var hand = 0

        init(machine: Machine, store: GuestPageStore) {
            self.machine = machine
            self.store = store
            age = Array(repeating: 0, count: store.pageCount)
            resident = Array(repeating: false, count: store.pageCount)
            dropped = Array(repeating: false, count: store.pageCount)
            refaults = Array(repeating: 0, count: store.pageCount)
        }
    }

    /// Extra cold scans a page must wait per earlier refault.
    static let refaultBackoff = 2

    /// Held for a whole scan, and by attach/detach.
    private let scanLock = NSLock()
    private var tracked: [ObjectIdentifier: Tracked] = [:]
    private let scratch: UnsafeMutableRawBufferPointer
    private let loop = Locked<(thread: Thread?, stop: DispatchSemaphore?)>((nil, nil))

    public init(configuration: DedupConfiguration) throws {
        guard configuration.mode != .off else { throw DedupError.invalidConfiguration("an engine in mode off does nothing: do not create one") }
        guard configuration.pagesPerScan > 0, configuration.shareAge >= 1, configuration.patchAge >= configuration.shareAge,
              configuration.compressAge >= configuration.shareAge, configuration.referenceAge >= configuration.shareAge else {
            throw DedupError.invalidConfiguration("pagesPerScan must be positive and every age at least shareAge ≥ 1")
        }
        self.configuration = configuration
        scratch = .allocate(byteCount: configuration.pagesPerScan * GuestMemory.pageSize, alignment: GuestMemory.pageSize)
        counters.withLock { $0.pageSize = GuestMemory.pageSize }
    }

    deinit {
        stop()
        scratch.deallocate()
    }

    /// A page source for a machine of `memorySize` bytes: give it as `MachineConfiguration.pageSource`.
    public func makeStore(memorySize: Int) throws -> GuestPageStore {
        try GuestPageStore(memorySize: memorySize, engine: self)
    }

    /// Starts tracking `machine`, whose configuration's page source is `store`.
    public func attach(_ machine: Machine, store: GuestPageStore) throws {
        guard machine.configuration.pageSource === store as AnyObject else {
            throw DedupError.invalidConfiguration("the machine's page source is not this store: create it with makeStore and put it in MachineConfiguration.pageSource")
        }
        try machine.startDirtyPageTracking()
        scanLock.withLock { tracked[ObjectIdentifier(machine)] = Tracked(machine: machine, store: store) }
    }

    /// Stops tracking `machine` (call after it stopped): its stored pages are forgotten, and
    /// references other machines' pages still use stay alive.
    public func detach(_ machine: Machine) {
        let entry = scanLock.withLock { tracked.removeValue(forKey: ObjectIdentifier(machine)) }
        entry?.store.releaseAll()
    }

    public var statistics: DedupStatistics {
        var statistics = counters.withLock { $0 }
        statistics.referencePages = index.liveReferences
        return statistics
    }

    /// Runs scans every `configuration.interval` on a thread of its own until `stop`.
    public func start() {
        loop.withLock { loop in
            guard loop.thread == nil else { return }
            let stop = DispatchSemaphore(value: 0)
            let interval = configuration.interval
            let thread = Thread { [weak self] in
                while true {
                    guard let self else { return }
                    self.scanOnce()
                    if stop.wait(timeout: .now() + .nanoseconds(Int(interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000))) == .success { return }
                }
            }
            thread.name = "dedup-scan"
            thread.start()
            loop = (thread, stop)
        }
    }

    /// Ends the background loop (after the scan in progress).
    public func stop() {
        let stop = loop.withLock { loop in
            defer { loop = (nil, nil) }
            return loop.stop
        }
        stop?.signal()
        scanLock.withLock {}
    }

    /// One scan of every attached machine: age pages, examine up to `pagesPerScan` cold ones per
    /// machine, drop those it can keep. Errors of one machine (it stopped) skip that machine.
    public func scanOnce() {
        scanLock.withLock {
            let cpuBefore = Self.threadCPUNanoseconds()
            for entry in tracked.values where entry.machine.state == .running || entry.machine.state == .paused {
                try? scan(entry)
            }
            let cpu = Self.threadCPUNanoseconds() - cpuBefore
            counters.withLock {
                $0.scans += 1
                $0.scanCPUNanoseconds += cpu
            }
        }
    }

    private func scan(_ entry: Tracked) throws {
        let pageSize = GuestMemory.pageSize
        let dirty = try entry.machine.dirtyPages()
        for page in 0..<entry.age.count where entry.resident[page] && !entry.dropped[page] && entry.age[page] < 255 {
            entry.age[page] += 1
        }
        for page in entry.store.takeFaulted() {
            if entry.dropped[page] && entry.refaults[page] < 8 { entry.refaults[page] += 1 }
            entry.resident[page] = true
            entry.dropped[page] = false
            entry.age[page] = 0
        }
        for page in dirty {
            entry.resident[page] = true
            entry.age[page] = 0
        }
        // Walk the clock from where the last scan stopped, examining cold resident pages.
        var proposals: [(page: Int, slot: Int, entry: StoredPage)] = []
        var examined = 0
        var visited = 0
        let shareAge = UInt8(min(configuration.shareAge, 255))
        while examined < configuration.pagesPerScan && visited < entry.age.count {
            let page = entry.hand
            entry.hand = (entry.hand + 1) % entry.age.count
            visited += 1
            guard entry.resident[page], !entry.dropped[page],
                  Int(entry.age[page]) >= Int(shareAge) + Self.refaultBackoff * Int(entry.refaults[page]) else { continue }
            let slot = UnsafeMutableRawBufferPointer(rebasing: scratch[(examined * pageSize)..<((examined + 1) * pageSize)])
            slot.copyMemory(from: UnsafeRawBufferPointer(start: entry.machine.memory.hostAddress(ofPage: page), count: pageSize))
            let age = Int(entry.age[page]) - Self.refaultBackoff * Int(entry.refaults[page])
            if let stored = classify(UnsafeRawBufferPointer(slot), age: age) {
                proposals.append((page, examined, stored))
            }
            examined += 1
        }
        counters.withLock { $0.pagesExamined += examined }
        guard !proposals.isEmpty else { return }
        try drop(proposals, of: entry)
    }

    /// What to keep for a cold page, or nil to leave it in the guest.
    private func classify(_ page: UnsafeRawBufferPointer, age: Int) -> StoredPage? {
        if PageDigest.isZero(page) { return .zero }
        let fingerprint = PageFingerprint(of: page)
        if let reference = index.acquireIdentical(page, fingerprint: fingerprint) { return .shared(reference) }
        let full = configuration.mode == .full
        if full && age >= configuration.patchAge {
            let candidates = index.acquireSimilar(BlockHash(of: page))
            var best: (reference: ReferencePage, delta: [UInt8])?
            for candidate in candidates {
                if let delta = codec.encode(page, reference: UnsafeRawBufferPointer(candidate.bytes), limit: best?.delta.count ?? page.count / 2) {
                    best = (candidate, delta)
                }
            }
            for candidate in candidates where candidate !== best?.reference { index.release(candidate) }
            if let best { return .patched(best.reference, best.delta) }
        }
        if full && age >= configuration.compressAge,
           let compressed = codec.encode(page, limit: page.count - configuration.compressMinSaving + 1) {
            return .compressed(compressed)
        }
        if age >= configuration.referenceAge { return .shared(index.insert(page, fingerprint: fingerprint)) }
        return nil
    }

    /// Pauses the machine, keeps and drops every proposal whose page is still exactly the copy
    /// that was encoded and was not written since, and resumes it.
    private func drop(_ proposals: [(page: Int, slot: Int, entry: StoredPage)], of entry: Tracked) throws {
        let pageSize = GuestMemory.pageSize
        let machine = entry.machine
        let wasRunning = machine.state == .running
        if wasRunning {
            do { try machine.pause() } catch {
                proposals.forEach { if let reference = $0.entry.reference { index.release(reference) } }
                throw error
            }
        }
        let pausedAt = ContinuousClock.now
        var accepted: [Int] = []
        var abandoned = 0
        let late = Set((try? machine.dirtyPages()) ?? [])
        for proposal in proposals {
            let live = machine.memory.hostAddress(ofPage: proposal.page)
            let copy = scratch.baseAddress! + proposal.slot * pageSize
            if late.contains(proposal.page) || memcmp(live, copy, pageSize) != 0 {
                if let reference = proposal.entry.reference { index.release(reference) }
                entry.age[proposal.page] = 0
                abandoned += 1
                continue
            }
            entry.store.keep(proposal.entry, for: proposal.page)
            accepted.append(proposal.page)
        }
        for page in late { entry.age[page] = 0 }
        // Contiguous runs, one discard each.
        var start = 0
        while start < accepted.count {
            var end = start + 1
            while end < accepted.count && accepted[end] == accepted[end - 1] + 1 { end += 1 }
            let run = accepted[start]..<(accepted[end - 1] + 1)
            do {
                try machine.discardPages(run)
                for page in run { entry.dropped[page] = true }
            } catch {
                for page in run { entry.store.unkeep(page) }
            }
            start = end
        }
        let paused = ContinuousClock.now - pausedAt
        if wasRunning { try machine.resume() }
        counters.withLock {
            $0.racesAbandoned += abandoned
            $0.pauses += 1
            $0.pausedNanoseconds += UInt64(paused.components.seconds) * 1_000_000_000 + UInt64(paused.components.attoseconds / 1_000_000_000)
        }
    }

    static func threadCPUNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
