import Catalog
import Foundation
import Hypervisor
import StreamClient

/// Guest RAM of a resumed appliance, page by page from the published memory snapshot: the
/// userfaultfd handler asks for a page the guest touched, and this reads the chunk holding it through
/// the memory artifact's `LazyImage` and its `ChunkRouter` (memory, disk cache, or a demand fetch
/// verified against the chunk's SHA-256), on the handler's own thread.
///
/// - Zero pages (digest 0 in vmstate.json) are answered `.zero` at once: no fetch, no cache read.
/// - A local chunk is read on the fault thread itself (no task, no hand-off); the router keeps the
///   last chunks decoded in memory, so a chunk's other pages cost a lookup and a page copy.
/// - A miss blocks the fault thread on the router's in-flight entry for the chunk: concurrent faults
///   on pages of one chunk, and a prefetch of it, share one fetch. Demand reads raise a prefetch
///   already in flight to demand priority; the fetcher starts demand requests before any prefetch.
/// - Each page is checked against its digest in vmstate.json after the chunk's SHA-256: a memory
///   image that does not match its state is refused, never mapped.
/// - A read that keeps failing is retried until the deadline, then thrown: the machine stops with
///   "guest memory unavailable" and never maps a wrong page.
/// - First touches are traced by the image (`LazyImage`), the one place that traces them.
public final class StreamedPageSource: PageSource, @unchecked Sendable {
    public let pageSize: Int
    public let pageCount: Int
    public let image: LazyImage
    private let layout: MachineSnapshot.MemoryImage
    private let fetch: BlockingFetch

    /// Whether a fault maps its whole chunk (`faultAroundPages`); off by default, see there.
    public let faultAround: Bool

    /// Time to each data page a fault asked for (`bench stream`'s fault-to-page figure).
    public let readTimes = PageReadTimes()

    /// `image` is the memory artifact (opened with the run's trace sink), `layout` the memory
    /// description from the validated vmstate.json.
    public init(image: LazyImage, layout: MachineSnapshot.MemoryImage, readDeadlineSeconds: Double, faultAround: Bool = false) throws {
        self.faultAround = faultAround
        guard image.artifact.role == .memory else {
            throw StreamBootError.invalidSnapshot("the page source needs the memory artifact, not \(image.artifact.role.rawValue)")
        }
        guard layout.size == image.size else {
            throw StreamBootError.invalidSnapshot("memory.img has \(image.size) bytes, vmstate.json describes \(layout.size)")
        }
        guard layout.pageSize > 0, image.chunkSize % layout.pageSize == 0 else {
            throw StreamBootError.invalidSnapshot("chunks of \(image.chunkSize) bytes do not hold whole \(layout.pageSize)-byte pages")
        }
        self.image = image
        self.layout = layout
        fetch = BlockingFetch(deadlineSeconds: readDeadlineSeconds)
        pageSize = layout.pageSize
        pageCount = layout.pageCount
    }

    public func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        guard index >= 0, index < pageCount, layout.digest(ofPage: index) != 0 else { return try read(index, into: buffer, traced: true) }
        let wasLocal = image.isLocal(chunk: index * pageSize / image.chunkSize)
        let began = monotonicSeconds()
        let content = try read(index, into: buffer, traced: true)
        readTimes.add(seconds: monotonicSeconds() - began, wasLocal: wasLocal)
        return content
    }

    /// The same verified read for a page installed ahead of the guest: the chunk's first touch is not
    /// traced here (`MemoryPageInstaller` decides what an installed chunk means for the trace).
    public func readPageAhead(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        try read(index, into: buffer, traced: false)
    }

    /// Traces chunk `chunk` as touched now, as a chunk read from the cache (a prefetch hit when this
    /// run prefetched it), unless a touch of it was already traced.
    public func traceInstalled(chunk: Int) { image.noteInstalled(chunk: chunk) }

    /// With `faultAround`, a fault loads the page's whole chunk and the handler installs all of its
    /// pages at once (a tenth of the faults in the lab). Off by default while the silent guest
    /// triple faults seen in streamed lab resumes are unexplained: first seen with it, then as often
    /// without it; see docs/STREAMBOOT.md.
    public func faultAroundPages(of index: Int) -> Range<Int> {
        guard faultAround, index >= 0, index < pageCount else { return index..<(index + 1) }
        return pages(ofChunk: index * pageSize / image.chunkSize)
    }

    /// The pages held by chunk `chunk`.
    public func pages(ofChunk chunk: Int) -> Range<Int> {
        let perChunk = image.chunkSize / pageSize
        let first = min(chunk * perChunk, pageCount)
        return first..<min(first + perChunk, pageCount)
    }

    private func read(_ index: Int, into buffer: UnsafeMutableRawBufferPointer, traced: Bool) throws -> PageContent {
        guard index >= 0, index < pageCount, buffer.count >= pageSize else { throw PageSourceError(page: index, problem: "outside the memory snapshot") }
        let expected = layout.digest(ofPage: index)
        if expected == 0 { return .zero }
        let offset = index * pageSize
        let chunk = offset / image.chunkSize
        let image = self.image
        let bytes: [UInt8]
        do {
            bytes = try fetch.retrying { try image.publishedChunkBlocking(chunk, touchedAt: traced ? offset : nil) }
        } catch {
            throw PageSourceError(page: index, problem: "memory chunk \(chunk) could not be read: \(error)")
        }
        let start = offset - chunk * image.chunkSize
        guard start + pageSize <= bytes.count else {
            throw PageSourceError(page: index, problem: "memory chunk \(chunk) is shorter than the page")
        }
        // The one copy on this path: the chunk's page into the handler's buffer (UFFDIO_COPY's source).
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<(start + pageSize)])) }
        let actual = PageDigest.digest(UnsafeRawBufferPointer(rebasing: buffer[0..<pageSize]))
        guard actual == expected else {
            throw PageSourceError(page: index, problem: "the published memory.img does not match vmstate.json (page digest 0x\(String(actual, radix: 16)), expected 0x\(String(expected, radix: 16)))")
        }
        return .data
    }
}
