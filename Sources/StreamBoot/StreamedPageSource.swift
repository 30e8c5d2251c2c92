import Catalog
import Foundation
import Hypervisor
import StreamClient

/// Guest RAM of a resumed appliance, page by page from the published memory snapshot: the
/// userfaultfd handler asks for a page the guest touched, and this reads the chunk holding it through
/// the memory artifact's `LazyImage` (cache, or a demand fetch verified against its SHA-256).
///
/// - Zero pages (digest 0 in vmstate.json) are answered `.zero` at once: no fetch, no cache read.
/// - A chunk is loaded once however many pages of it fault at the same time: the first fault loads
///   it, the others wait for that load (the handler's fetch threads block here, so a slow chunk holds
///   up only the pages that need it). The last few chunks stay decoded in memory, so the rest of a
///   chunk's pages cost a copy.
/// - Demand reads run at demand priority, which the fetcher starts before any prefetch and which
///   raises a prefetch already in flight for that chunk.
/// - Each page is checked against its digest in vmstate.json after the chunk's SHA-256: a memory
///   image that does not match its state is refused, never mapped.
/// - A read that keeps failing is retried until the deadline, then thrown: the machine stops with
///   "guest memory unavailable" and never maps a wrong page.
/// - The first touch of each chunk is reported to the trace sink as an access to the `memory`
///   artifact (offset of the page, demand miss or prefetch hit, stall), like a disk chunk.
public final class StreamedPageSource: PageSource, @unchecked Sendable {
    /// Decoded chunks kept in memory (64 × 64 KiB chunks = 4 MiB): enough that a guest walking
    /// through a few regions at once reads each chunk from the cache once (oldest loaded leaves first).
    static let residentChunks = 64

    public let pageSize: Int
    public let pageCount: Int
    public let image: LazyImage
    private let layout: MachineSnapshot.MemoryImage
    private let traceSink: (any AccessTraceSink)?
    private let fetch: BlockingFetch
    private let openedAt = ContinuousClock.now

    /// A chunk being loaded: pages of it wait here until `result` is set.
    private final class Load {
        var result: Result<[UInt8], any Error>?
    }

    private let condition = NSCondition()
    private var loading: [Int: Load] = [:]
    private var resident: [Int: [UInt8]] = [:]
    private var residentOrder: [Int] = []
    private var touched: Set<Int> = []
    private var loads = 0

    /// `image` is the memory artifact, `layout` the memory description from the validated vmstate.json.
    /// Whether a fault maps its whole chunk (`faultAroundPages`); off by default, see there.
    public let faultAround: Bool

    public init(image: LazyImage, layout: MachineSnapshot.MemoryImage, traceSink: (any AccessTraceSink)?, readDeadlineSeconds: Double,
                faultAround: Bool = false) throws {
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
        self.traceSink = traceSink
        fetch = BlockingFetch(deadlineSeconds: readDeadlineSeconds)
        pageSize = layout.pageSize
        pageCount = layout.pageCount
    }

    /// Chunk loads so far (reads through the image; concurrent faults on one chunk count once).
    public var chunkLoads: Int { condition.withLock { loads } }

    public func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        guard index >= 0, index < pageCount, layout.digest(ofPage: index) != 0 else { return try read(index, into: buffer, traced: true) }
        let wasLocal = image.isLocal(chunk: index * pageSize / image.chunkSize)
        let began = monotonicSeconds()
        let content = try read(index, into: buffer, traced: true)
        readTimes.add(seconds: monotonicSeconds() - began, wasLocal: wasLocal)
        return content
    }

    /// Time to each data page a fault asked for (`bench stream`'s fault-to-page figure).
    public let readTimes = PageReadTimes()

    /// The same verified read for a page installed ahead of the guest: the chunk's first touch is not
    /// traced here (`MemoryPageInstaller` decides what an installed chunk means for the trace).
    public func readPageAhead(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        try read(index, into: buffer, traced: false)
    }

    /// Traces chunk `chunk` as touched now, as a chunk read from the cache (a prefetch hit when this
    /// run prefetched it), unless a touch of it was already traced.
    public func traceInstalled(chunk: Int) {
        guard chunk >= 0, chunk < image.artifact.chunks.count, let traceSink else { return }
        guard condition.withLock({ touched.insert(chunk).inserted }) else { return }
        let ref = image.chunkRef(chunk)
        traceSink.recordInstalled(FirstAccess(role: .memory, chunkIndex: chunk, chunk: ref?.id, offset: chunk * image.chunkSize,
                                     seconds: (ContinuousClock.now - openedAt).inSeconds, source: ref == nil ? .zero : .cache,
                                     stallSeconds: 0))
    }

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
        let bytes: [UInt8]
        do {
            bytes = try chunkBytes(chunk, touchedAt: offset, traced: traced)
        } catch {
            throw PageSourceError(page: index, problem: "memory chunk \(chunk) could not be read: \(error)")
        }
        let start = offset - chunk * image.chunkSize
        guard start + pageSize <= bytes.count else {
            throw PageSourceError(page: index, problem: "memory chunk \(chunk) is shorter than the page")
        }
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<(start + pageSize)])) }
        let actual = PageDigest.digest(UnsafeRawBufferPointer(rebasing: buffer[0..<pageSize]))
        guard actual == expected else {
            throw PageSourceError(page: index, problem: "the published memory.img does not match vmstate.json (page digest 0x\(String(actual, radix: 16)), expected 0x\(String(expected, radix: 16)))")
        }
        return .data
    }

    /// The whole decoded chunk, from memory, from another thread's load of it, or loaded here.
    private func chunkBytes(_ chunk: Int, touchedAt offset: Int, traced: Bool) throws -> [UInt8] {
        condition.lock()
        if let bytes = resident[chunk] {
            condition.unlock()
            return bytes
        }
        if let pending = loading[chunk] {
            while pending.result == nil { condition.wait() }
            condition.unlock()
            return try pending.result!.get()
        }
        let load = Load()
        loading[chunk] = load
        loads += 1
        condition.unlock()

        let result = Result { try readChunk(chunk, touchedAt: offset, traced: traced) }
        condition.lock()
        load.result = result
        loading.removeValue(forKey: chunk)
        if case .success(let bytes) = result {
            resident[chunk] = bytes
            residentOrder.append(chunk)
            if residentOrder.count > Self.residentChunks { resident.removeValue(forKey: residentOrder.removeFirst()) }
        }
        condition.broadcast()
        condition.unlock()
        return try result.get()
    }

    /// Reads chunk `chunk` through the image (blocking this handler thread) and traces its first touch.
    private func readChunk(_ chunk: Int, touchedAt offset: Int, traced: Bool) throws -> [UInt8] {
        let image = self.image
        let start = chunk * image.chunkSize
        let length = min(image.chunkSize, image.size - start)
        let ref = image.chunkRef(chunk)
        let wasLocal = image.isLocal(chunk: chunk)
        let began = ContinuousClock.now
        let bytes = try fetch.run { try await image.read(offset: start, length: length) }
        let waited = (ContinuousClock.now - began).inSeconds
        guard traced else { return bytes }
        let first = condition.withLock { touched.insert(chunk).inserted }
        if first, let traceSink {
            let source: AccessSource = ref == nil ? .zero : (wasLocal ? .cache : .fetched)
            traceSink.record(FirstAccess(role: .memory, chunkIndex: chunk, chunk: ref?.id, offset: offset,
                                         seconds: (began - openedAt).inSeconds, source: source,
                                         stallSeconds: source == .fetched ? waited : 0))
        }
        return bytes
    }
}
