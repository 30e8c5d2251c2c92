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
///   once it is local. Demand faults never wait for it: they are served by the handler's own threads,
///   and a fault racing an install of the same page is woken by that install's UFFDIO_COPY.
/// - Every page goes through `StreamedPageSource.readPageAhead`: the chunk's SHA-256 and each page's
///   vmstate digest are checked as for a fault; a page that fails is never mapped and the VM stops.
/// - Traces: an installed chunk is never faulted on, so with `traceInstalls` it is traced as touched
///   when it is installed (a prefetch hit: the model predicted it). That keeps the prefetch driver
///   moving (it advances on touches) and keeps the chunk in the next model. `full` runs do not trace
///   installs (no model chose those chunks); `none` runs never install.
public final class MemoryPageInstaller: @unchecked Sendable {
    /// How often the thread looks whether prefetched chunks it waits for have arrived.
    static let pollSeconds = 0.005

    public let pages: StreamedPageSource
    private let traceInstalls: Bool
    private let condition = NSCondition()
    private var pending: Set<Int> = []
    private var installed: Set<Int> = []
    private var startupChunks: [Int] = []
    private var installedPages = 0
    private var stopping = false
    private var running = false
    private let finished = DispatchSemaphore(value: 0)

    public init(pages: StreamedPageSource, traceInstalls: Bool) {
        self.pages = pages
        self.traceInstalls = traceInstalls
    }

    /// Pages installed so far (before the start and while the guest ran).
    public var pagesInstalled: Int { condition.withLock { installedPages } }

    /// The prefetcher fetches memory chunk `chunk` in this run: install it once it is local.
    public func notePrefetched(chunk: Int) {
        condition.withLock {
            guard !installed.contains(chunk) else { return }
            pending.insert(chunk)
            condition.signal()
        }
    }

    /// The pages to install before the vCPUs start: local chunks this run prefetched, or with
    /// `everyLocalChunk` all local chunks. Those chunks are not installed again later.
    public func startupPages(everyLocalChunk: Bool) -> [Int] {
        let image = pages.image
        return condition.withLock {
            let chunks = (0..<image.artifact.chunks.count).filter {
                image.chunkRef($0) != nil && (everyLocalChunk || pending.contains($0)) && image.isLocal(chunk: $0)
            }
            pending.subtract(chunks)
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
    }

    private func installLoop(_ handler: PageFaultHandler) {
        // Below the fault threads: an install never competes with a demand fault for a core. (Linux
        // nice values are per thread: `who` 0 is this thread only.)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        let image = pages.image
        while true {
            condition.lock()
            while !stopping && pending.isEmpty { condition.wait() }
            if stopping { condition.unlock(); return }
            let arrived = pending.filter { image.isLocal(chunk: $0) }
            if arrived.isEmpty {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Self.pollSeconds))
                condition.unlock()
                continue
            }
            pending.subtract(arrived)
            installed.formUnion(arrived)
            condition.unlock()
            for chunk in arrived.sorted() {
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
