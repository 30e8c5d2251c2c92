import CKVM
import Foundation
import Glibc
import Synchronization

/// One page's first touch after lazy memory was armed: for traces and the "pages touched" figure.
public struct FirstTouch: Sendable, Equatable {
    /// Page index in guest RAM's backing file (offset / page size).
    public let page: Int
    /// Nanoseconds since the handler started.
    public let nanoseconds: UInt64
}

/// Serves guest RAM lazily: every page starts missing, and the first access to a page (by a vCPU
/// through KVM, or by a VMM thread emulating a device) blocks in the kernel until this handler maps
/// the page's bytes from a `PageSource` with UFFDIO_COPY (or UFFDIO_ZEROPAGE for zero pages).
///
/// Faults are read on a dedicated thread (never the Swift concurrency pool). With `fetchThreads`
/// = 0 the reader serves each page itself, which is quickest for sources that answer from memory or
/// the page cache; with more, pages are fetched in parallel so a slow page (network) holds up only
/// the threads that touched it. A page is fetched once however many threads fault on it; a fault
/// that arrives after its page was installed, or an EEXIST race, is answered with UFFDIO_WAKE.
///
/// A source error stops service: `onError` is called once (the caller stops the VM), and no page is
/// mapped for that fault or any later one. With `revokeOnError` (the default) guest RAM is then made
/// inaccessible (PROT_NONE) and the waiting threads are woken: a vCPU blocked on the page leaves
/// KVM_RUN with EFAULT instead of waiting forever (a fault taken inside KVM cannot always be
/// interrupted by a signal), and still never sees a page. Only a stopped VM's threads may touch
/// guest RAM after that.
public final class PageFaultHandler: @unchecked Sendable {
    /// How the reader waits for faults: blocking in poll(2), or spinning on a non-blocking read
    /// (lower latency, one host core busy all the time).
    public enum WaitMode: String, Sendable, Codable, CaseIterable {
        case blocking
        case busyPolling
    }

    /// Per-page state, shared by the reader and fetch threads.
    enum PageState: UInt8 {
        case missing, fetching, present
    }

    /// Messages read per read(2) call.
    static let batchSize = 64

    public let pageSize: Int
    public let pageCount: Int
    private let service: Service

    /// Whether this process may open a userfaultfd (used by tests to skip with a reason).
    public static var isAvailable: Bool { (try? Userfaultfd(pageSize: GuestMemory.pageSize)) != nil }

    /// Registers every region of `memory` with a new userfaultfd; nothing is served until `start`.
    /// Call before anything touches `memory` (a page already present is never faulted on).
    public init(memory: GuestMemory, source: any PageSource, waitMode: WaitMode = .blocking, fetchThreads: Int = 0,
                revokeOnError: Bool = true, onError: @escaping @Sendable (PageSourceError) -> Void) throws {
        guard source.pageSize == GuestMemory.pageSize else {
            throw HypervisorError.invalidConfiguration("page source uses \(source.pageSize)-byte pages, host pages are \(GuestMemory.pageSize) bytes")
        }
        guard source.pageCount * source.pageSize == memory.size else {
            throw HypervisorError.invalidConfiguration("page source holds \(source.pageCount * source.pageSize) bytes, guest RAM is \(memory.size) bytes")
        }
        guard (0...64).contains(fetchThreads) else { throw HypervisorError.invalidConfiguration("fetchThreads must be 0...64") }
        pageSize = source.pageSize
        pageCount = source.pageCount
        let uffd = try Userfaultfd(pageSize: pageSize, sharedMemory: memory.backing == .sharedMemfd)
        for region in memory.regions {
            // No transparent huge pages under lazy memory: where shmem THP is enabled, the first
            // UFFDIO_COPY into a 2 MiB range can allocate a huge page and KVM then maps all of it,
            // so the guest reads 511 pages this handler never filled (zeros) without a fault. A
            // host that ignores the advice (shmem_enabled=force) is not protected by it.
            _ = madvise(region.host, region.length, MADV_NOHUGEPAGE)
            try uffd.register(start: region.host, length: region.length)
        }
        service = try Service(uffd: uffd, memory: memory, source: source, waitMode: waitMode, fetchThreads: fetchThreads,
                              revokeOnError: revokeOnError, onError: onError)
    }

    deinit { service.shutdown() }

    /// Starts the fault reader (and fetch threads). Call once.
    public func start() { service.start() }

    /// Stops serving faults and joins the threads. Threads still waiting for a page stay blocked
    /// until the memory is unmapped; call it after the vCPUs have stopped.
    public func stop() { service.shutdown() }

    /// Maps every page not yet present, in order, from the caller's thread ("read all memory first",
    /// the eager alternative to lazy restore). Throws the source's error.
    public func populateAll() throws { try service.populate(0..<service.source.pageCount) }

    /// Maps the given pages now (a recorded working set, REAP-style), each once, before the guest
    /// asks for them; pages already present or out of range are skipped. Not logged as first touches.
    /// Safe while the guest runs (from any thread but the reader): a fault on a page being installed
    /// here is left to this COPY, which wakes it; a page a fault claimed first is skipped.
    public func populate(pages: [Int]) throws { try service.populate(pages.filter { (0..<service.source.pageCount).contains($0) }) }

    /// Each page's first touch, in the order the faults were read; a page appears at most once.
    public var faultLog: [FirstTouch] { service.faultLog }
    /// Pages mapped so far (by faults or `populateAll`).
    public var presentPageCount: Int { service.presentPageCount }
    /// How many first touches `faultLog` holds, without copying it.
    public var firstTouchCount: Int { service.shared.withLock { $0.log.count } }
    /// Faults answered by fetching a page from the source: first touches, and touches of pages
    /// fetched again after `discard`.
    public var faultsServed: Int { service.shared.withLock { $0.faultsServed } }

    /// Drops `pages` from guest RAM and marks them missing, in one step with respect to faults: the
    /// next touch of each faults to the source again (`readPage`; not logged again as a first
    /// touch). A page being fetched right now cannot be dropped (its copy is in flight): that throws
    /// and drops nothing. See `GuestMemory.discard` for what it costs a running guest.
    public func discard(pages: Range<Int>) throws { try service.discard(pages) }
    /// The first source error, if service stopped because of one.
    public var failure: PageSourceError? { service.failure }

    /// The state shared with the threads; the threads hold it, not the handler, so dropping the
    /// handler shuts them down.
    final class Service: @unchecked Sendable {
        struct Shared {
            var states: [PageState]
            var log: [FirstTouch] = []
            var presentCount = 0
            var failure: PageSourceError?
            var queue: [Int] = []
            var queueHead = 0
            var shuttingDown = false
            /// Pages already logged as first touches (a page fetched again after a discard is not).
            var touched: [Bool]
            var faultsServed = 0
        }

        let uffd: Userfaultfd
        let memory: GuestMemory
        let source: any PageSource
        let waitMode: WaitMode
        let fetchThreads: Int
        let revokeOnError: Bool
        let onError: @Sendable (PageSourceError) -> Void
        let shared: Locked<Shared>
        let queueCondition = NSCondition()
        let mappingBase: UInt64
        let startNanoseconds: UInt64
        /// A pipe: `shutdown` writes to [1], the blocking reader polls [0].
        let stopPipe: [Int32]
        /// Checked on every turn of the busy-polling loop: an atomic load, no lock.
        private let spinStop = Atomic<Bool>(false)
        private let finished = DispatchSemaphore(value: 0)
        private let started = Locked(false)
        private let stoppedOnce = Locked(false)

        init(uffd: Userfaultfd, memory: GuestMemory, source: any PageSource, waitMode: WaitMode, fetchThreads: Int,
             revokeOnError: Bool, onError: @escaping @Sendable (PageSourceError) -> Void) throws {
            self.revokeOnError = revokeOnError
            self.uffd = uffd
            self.memory = memory
            self.source = source
            self.waitMode = waitMode
            self.fetchThreads = fetchThreads
            self.onError = onError
            shared = Locked(Shared(states: [PageState](repeating: .missing, count: source.pageCount),
                                   touched: [Bool](repeating: false, count: source.pageCount)))
            mappingBase = UInt64(UInt(bitPattern: memory.regions[0].host)) - UInt64(memory.regions[0].fileOffset)
            startNanoseconds = Self.monotonicNanoseconds()
            var ends: [Int32] = [-1, -1]
            guard pipe(&ends) == 0 else { throw HypervisorError.system(call: "pipe", errno: errno) }
            for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
            stopPipe = ends
        }

        deinit { stopPipe.forEach { close($0) } }

        static func monotonicNanoseconds() -> UInt64 { MonotonicClock.nanoseconds() }

        var threadCount: Int { 1 + fetchThreads }

        func start() {
            let first = started.withLock { value -> Bool in defer { value = true }; return !value }
            guard first else { return }
            spawn("uffd-reader") { $0.readLoop() }
            for index in 0..<fetchThreads { spawn("uffd-fetch\(index)") { $0.fetchLoop() } }
        }

        private func spawn(_ name: String, _ body: @escaping @Sendable (Service) -> Void) {
            let thread = Thread { [self] in
                body(self)
                finished.signal()
            }
            thread.name = name
            thread.stackSize = 512 << 10
            thread.start()
        }

        func shutdown() {
            let first = stoppedOnce.withLock { value -> Bool in defer { value = true }; return !value }
            guard first, started.withLock({ $0 }) else { return }
            spinStop.store(true, ordering: .releasing)
            var one: UInt8 = 1
            _ = write(stopPipe[1], &one, 1)
            queueCondition.lock()
            shared.withLock { $0.shuttingDown = true }
            queueCondition.broadcast()
            queueCondition.unlock()
            for _ in 0..<threadCount { finished.wait() }
        }

        var faultLog: [FirstTouch] { shared.withLock { $0.log } }
        var presentPageCount: Int { shared.withLock { $0.presentCount } }
        var failure: PageSourceError? { shared.withLock { $0.failure } }

        // MARK: reading faults

        private func readLoop() {
            let messageSize = MemoryLayout<uffd_msg>.size
            let messages = UnsafeMutablePointer<uffd_msg>.allocate(capacity: PageFaultHandler.batchSize)
            defer { messages.deallocate() }
            // Two pages: the faulting page's bytes, and its fault-around neighbours' one at a time.
            let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * uffd.pageSize, alignment: uffd.pageSize)
            defer { page.deallocate() }
            var descriptors = [pollfd(fd: uffd.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopPipe[0], events: Int16(POLLIN), revents: 0)]
            while true {
                let count = read(uffd.fd, messages, messageSize * PageFaultHandler.batchSize)
                if count < 0 {
                    guard errno == EAGAIN || errno == EINTR else { return }
                    switch waitMode {
                    case .busyPolling:
                        if spinStop.load(ordering: .acquiring) { return }
                    case .blocking:
                        _ = poll(&descriptors, 2, -1)
                        if descriptors[1].revents != 0 { return }
                    }
                    continue
                }
                let now = Self.monotonicNanoseconds() &- startNanoseconds
                for index in 0..<(count / messageSize) where messages[index].event == CUFFD_EVENT_PAGEFAULT {
                    let address = ckvm_uffd_msg_fault_address(messages + index)
                    handleFault(at: address, time: now, scratch: page)
                }
            }
        }

        /// What the reader should do for one fault message, decided under the lock.
        private enum FaultDecision {
            case serve(page: Int)
            case enqueued
            case wake
            case ignore
        }

        private func handleFault(at address: UInt64, time: UInt64, scratch: UnsafeMutableRawBufferPointer) {
            let pageAddress = address & ~UInt64(uffd.pageSize - 1)
            guard pageAddress >= mappingBase else { return }
            let page = Int((pageAddress - mappingBase) / UInt64(uffd.pageSize))
            let decision: FaultDecision = shared.withLock { shared in
                guard page < shared.states.count else { return .ignore }
                guard shared.failure == nil else { return .ignore }
                switch shared.states[page] {
                case .present: return .wake
                case .fetching: return .ignore // the COPY that installs it wakes every waiter
                case .missing:
                    shared.states[page] = .fetching
                    shared.faultsServed += 1
                    if !shared.touched[page] {
                        shared.touched[page] = true
                        shared.log.append(FirstTouch(page: page, nanoseconds: time))
                    }
                    if fetchThreads == 0 { return .serve(page: page) }
                    shared.queue.append(page)
                    return .enqueued
                }
            }
            switch decision {
            case let .serve(page): install(page, scratch: scratch)
            case .enqueued:
                queueCondition.lock()
                queueCondition.signal()
                queueCondition.unlock()
            case .wake: uffd.wake(pageAddress)
            case .ignore: break
            }
        }

        private func fetchLoop() {
            let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * uffd.pageSize, alignment: uffd.pageSize)
            defer { page.deallocate() }
            while true {
                queueCondition.lock()
                var next: Int?
                while next == nil {
                    let (item, done) = shared.withLock { shared -> (Int?, Bool) in
                        if shared.shuttingDown { return (nil, true) }
                        guard shared.queueHead < shared.queue.count else { return (nil, false) }
                        defer {
                            shared.queueHead += 1
                            if shared.queueHead == shared.queue.count { shared.queue.removeAll(keepingCapacity: true); shared.queueHead = 0 }
                        }
                        return (shared.queue[shared.queueHead], false)
                    }
                    if done { queueCondition.unlock(); return }
                    next = item
                    if next == nil { queueCondition.wait() }
                }
                queueCondition.unlock()
                install(next!, scratch: page)
            }
        }

        // MARK: installing pages

        /// Fetches page `page` (state `.fetching`, owned by this thread) and maps it.
        /// `ahead`: installed by `populate` or fault-around, not for a fault (the source reads it with
        /// `readPageAhead`). A fault's scratch holds two pages; the second is for its neighbours.
        private func install(_ page: Int, scratch: UnsafeMutableRawBufferPointer, ahead: Bool = false) {
            let address = mappingBase + UInt64(page * uffd.pageSize)
            do {
                let content: PageContent
                do {
                    content = try ahead ? source.readPageAhead(page, into: scratch) : source.readPage(page, into: scratch)
                } catch let error as PageSourceError {
                    throw error
                } catch {
                    throw PageSourceError(page: page, problem: "\(error)")
                }
                // Neighbours first, while whoever faulted still waits for this page (a faulting vCPU
                // does not run meanwhile; with one vCPU none does, unless a device thread faulted).
                // Only after a data page: its read loaded and traced the chunk, while a zero page
                // loads nothing and the neighbours would be fetched untraced, the fault waiting.
                if !ahead, content == .data, scratch.count >= 2 * uffd.pageSize {
                    installFaultAround(page, scratch: UnsafeMutableRawBufferPointer(rebasing: scratch[uffd.pageSize...]))
                    // A neighbour that failed stopped service: nothing more is mapped, this page neither.
                    if shared.withLock({ $0.failure != nil }) { return }
                }
                let outcome: Userfaultfd.Install
                do {
                    switch content {
                    case .data: outcome = try uffd.copy(UnsafeRawPointer(scratch.baseAddress!), to: address)
                    case .zero: outcome = try uffd.zeroPage(at: address)
                    }
                } catch {
                    throw PageSourceError(page: page, problem: "cannot map the page: \(error)")
                }
                if outcome == .alreadyPresent { uffd.wake(address) }
                shared.withLock { shared in
                    shared.states[page] = .present
                    shared.presentCount += 1
                }
            } catch let error as PageSourceError {
                let first = shared.withLock { shared -> Bool in
                    guard shared.failure == nil else { return false }
                    shared.failure = error
                    return true
                }
                if first {
                    onError(error)
                    if revokeOnError { revokeGuestMemory() }
                }
            } catch {}
        }

        /// Before a fault's page is mapped: the other pages the source delivered with it, unless
        /// something else claimed them. They are not first touches (not logged); a thread that touches
        /// one meanwhile waits for its COPY like any fault on a page being fetched.
        private func installFaultAround(_ page: Int, scratch: UnsafeMutableRawBufferPointer) {
            let around = source.faultAroundPages(of: page).clamped(to: 0..<source.pageCount)
            for neighbour in around where neighbour != page {
                let claimed = shared.withLock { shared -> Bool in
                    guard shared.failure == nil, !shared.shuttingDown, shared.states[neighbour] == .missing else { return false }
                    shared.states[neighbour] = .fetching
                    return true
                }
                if claimed { install(neighbour, scratch: scratch, ahead: true) }
            }
        }

        /// Fail closed: no access to guest RAM succeeds any more, and every waiter retries its fault,
        /// which now fails (EFAULT in KVM) instead of mapping anything.
        private func revokeGuestMemory() {
            for region in memory.regions {
                mprotect(region.host, region.length, PROT_NONE)
                uffd.wake(UInt64(UInt(bitPattern: region.host)), length: region.length)
            }
        }

        func discard(_ pages: Range<Int>) throws {
            guard pages.lowerBound >= 0, pages.upperBound <= source.pageCount else {
                throw HypervisorError.invalidConfiguration("pages \(pages) are outside guest RAM's \(source.pageCount) pages")
            }
            try shared.withLock { shared in
                if let failure = shared.failure { throw failure }
                if let busy = pages.first(where: { shared.states[$0] == .fetching }) {
                    throw HypervisorError.invalidState("guest page \(busy) is being fetched; discard it once it is in")
                }
                // Under the lock: a fault read meanwhile waits and then finds the page missing.
                try memory.discard(pages: pages)
                for page in pages where shared.states[page] == .present {
                    shared.states[page] = .missing
                    shared.presentCount -= 1
                }
            }
        }

        func populate<Pages: Sequence<Int>>(_ pages: Pages) throws {
            let page = UnsafeMutableRawBufferPointer.allocate(byteCount: uffd.pageSize, alignment: uffd.pageSize)
            defer { page.deallocate() }
            for index in pages {
                let claimed = shared.withLock { shared -> Bool in
                    guard shared.failure == nil, shared.states[index] == .missing else { return false }
                    shared.states[index] = .fetching
                    return true
                }
                if claimed { install(index, scratch: page, ahead: true) }
                if let failure { throw failure }
            }
        }
    }
}
