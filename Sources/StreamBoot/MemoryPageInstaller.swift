import Foundation
import Glibc
import Hypervisor
import StreamClient

/// Puts memory chunks that are already on this host into guest RAM before the guest touches them, so
/// a resumed guest does not take one userfaultfd fault (3–6 ms on real KVM) per page of memory the
/// prefetcher already brought (issue #6).
///
/// - Before the vCPUs start, `startupPages` names the pages of every local memory chunk this run
///   prefetched (vtube's startup buffer, workingset's working set) or, for `full`, of every local
///   chunk; the machine installs them (`RestorePlan.prefetchPages`). Zero pages inside such a chunk
///   are mapped with UFFDIO_ZEROPAGE (no copy, no memory; far cheaper than the fault it saves);
///   chunks that are all zeros (no data published) stay lazy.
/// - While the guest runs, a low-priority thread of its own installs each prefetched memory chunk
///   once it is local: the router tells the installer when a fetched chunk arrives
///   (`LazyImage.observeArrivals`), so the thread sleeps until there is work (it looked every 5 ms
///   before). Demand faults never wait for it: they are served by the handler's own threads, and a
///   fault racing an install of the same page is woken by that install's UFFDIO_COPY.
/// - Every page goes through `StreamedPageSource.readPageAhead`: the chunk's SHA-256 and each page's
///   vmstate digest are checked as for a fault; a page that fails is never mapped and the VM stops.
/// - Traces: an installed chunk is never faulted on, so with `traceInstalls` it is traced as touched
///   when it is installed (a prefetch hit: the model predicted it). That keeps the prefetch driver
///   moving (it advances on touches) and keeps the chunk in the next model. `full` runs do not trace
///   installs (no model chose those chunks); `none` runs never install.
public final class MemoryPageInstaller: @unchecked Sendable {
    public let pages: StreamedPageSource
    private let traceInstalls: Bool
    private let condition = NSCondition()
    /// Prefetched chunks not local yet, and local ones waiting for the thread.
    private var pending: Set<Int> = []
    private var arrived: Set<Int> = []
    private var observation: ChunkRouter.Observation?
    private var installed: Set<Int> = []
    private var startupChunks: [Int] = []
    private var installedPages = 0
    private var stopping = false
    private var running = false
    private let finished = DispatchSemaphore(value: 0)

    public init(pages: StreamedPageSource, traceInstalls: Bool) {
        self.pages = pages
        self.traceInstalls = traceInstalls
        observation = pages.image.observeArrivals { [weak self] chunk in self?.arrivedLocally(chunk) }
    }

    deinit {
        if let observation { pages.image.loader.stopObserving(observation) }
    }

    /// The router fetched chunk `chunk`: if this run waits for it, it is ready to install.
    private func arrivedLocally(_ chunk: Int) {
        condition.withLock {
            guard pending.remove(chunk) != nil else { return }
            arrived.insert(chunk)
            condition.signal()
        }
    }

    /// Prefetched chunks that are local and wait for the install thread (tests, diagnostics).
    public var chunksReadyToInstall: Set<Int> { condition.withLock { arrived } }

    /// Pages installed so far (before the start and while the guest ran).
    public var pagesInstalled: Int { condition.withLock { installedPages } }

    /// The prefetcher fetches memory chunk `chunk` in this run: install it once it is local.
    public func notePrefetched(chunk: Int) {
        condition.withLock {
            guard !installed.contains(chunk), !arrived.contains(chunk) else { return }
            // Checked under the lock that `arrivedLocally` takes, after the router made the chunk
            // local and before it tells observers: an arrival is never missed.
            if pages.image.isLocal(chunk: chunk) {
                pending.remove(chunk)
                arrived.insert(chunk)
                condition.signal()
            } else {
                pending.insert(chunk)
            }
        }
    }

    /// The pages to install before the vCPUs start: local chunks this run prefetched, or with
    /// `everyLocalChunk` all local chunks. Those chunks are not installed again later.
    public func startupPages(everyLocalChunk: Bool) -> [Int] {
        let image = pages.image
        return condition.withLock {
            let chunks = (0..<image.artifact.chunks.count).filter {
                image.chunkRef($0) != nil && (everyLocalChunk || pending.contains($0) || arrived.contains($0)) && image.isLocal(chunk: $0)
            }
            pending.subtract(chunks)
            arrived.subtract(chunks)
            installed.formUnion(chunks)
            startupChunks = chunks
            let list = chunks.flatMap { Array(pages.pages(ofChunk: $0)) }
            installedPages += list.count
            return list
        }
    }

    /// The guest starts now (its startup pages are in): trace them and install the rest as it arrives.
    public func start(handler: PageFaultHandler) {
        let startup = condition.withLock { () -> [Int] in
            running = true
            return startupChunks
        }
        if traceInstalls { startup.forEach { pages.traceInstalled(chunk: $0) } }
        let thread = Thread { [self] in
            installLoop(handler)
            finished.signal()
        }
        thread.name = "memory-install"
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// Stops installing and waits for the thread; call before the machine's memory goes away.
    public func stop() {
        let wasRunning = condition.withLock { () -> Bool in
            defer { running = false }
            stopping = true
            condition.broadcast()
            return running
        }
        if wasRunning { finished.wait() }
        let observation = condition.withLock { () -> ChunkRouter.Observation? in
            let current = self.observation
            self.observation = nil
            return current
        }
        if let observation { pages.image.loader.stopObserving(observation) }
    }

    private func installLoop(_ handler: PageFaultHandler) {
        // Below the fault threads: an install never competes with a demand fault for a core. (Linux
        // nice values are per thread: `who` 0 is this thread only.)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        while true {
            condition.lock()
            while !stopping && arrived.isEmpty { condition.wait() }
            if stopping { condition.unlock(); return }
            let ready = arrived
            arrived.removeAll()
            installed.formUnion(ready)
            condition.unlock()
            for chunk in ready.sorted() {
                if condition.withLock({ stopping }) { return }
                let list = Array(pages.pages(ofChunk: chunk))
                do {
                    try handler.populate(pages: list)
                } catch {
                    return // the handler stopped the VM with this error; nothing more is installed
                }
                condition.withLock { installedPages += list.count }
                if traceInstalls { pages.traceInstalled(chunk: chunk) }
            }
        }
    }
}
