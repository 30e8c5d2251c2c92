/// What a page source found for one guest page.
public enum PageContent: Sendable, Equatable {
    /// The page's bytes were written into the caller's buffer.
    case data
    /// The page is all zeros; the buffer was left untouched (the kernel zero-fills it, cheaper than a copy).
    case zero
}

/// Where the bytes of lazily loaded guest RAM come from (a snapshot file, memory, the network).
///
/// Called only on the page-fault handler's threads, never on the Swift concurrency pool, so an
/// implementation may block (for a file read or until a chunk arrives from the network). It must
/// either deliver the page's exact bytes or throw: the handler stops the VM on an error and never
/// maps a page it could not verify. Pages are numbered by their offset in guest RAM's backing file
/// (`GuestMemory`'s memfd) divided by the page size.
public protocol PageSource: AnyObject, Sendable {
    /// Bytes per page; must equal the host page size the handler uses.
    var pageSize: Int { get }
    /// Number of pages this source can deliver (the whole of guest RAM).
    var pageCount: Int { get }
    /// Writes page `index` into `buffer` (exactly `pageSize` bytes) or reports it as all zeros.
    /// Blocks until the bytes are available; throws when they cannot be had or fail verification.
    func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent
    /// As `readPage`, for a page installed ahead of the guest (`PageFaultHandler.populate`), not
    /// because it touched it: a source that traces first touches can tell the two apart.
    func readPageAhead(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent
    /// The pages that become available together with page `index` (the unit the source fetches,
    /// e.g. one chunk), including `index`. On a fault on a data page the handler installs all of
    /// them (through `readPageAhead`), so the guest takes one fault per unit instead of one per page; a fault costs far more than a copy (a vCPU
    /// exit, a thread wake-up and a return, 3–6 ms under nested virtualization).
    func faultAroundPages(of index: Int) -> Range<Int>
}

extension PageSource {
    public func readPageAhead(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        try readPage(index, into: buffer)
    }

    /// Only the page itself: a source whose pages cost the same one by one gains nothing from more.
    public func faultAroundPages(of index: Int) -> Range<Int> { index..<(index + 1) }
}

/// Why a page source could not deliver a page; the message names the page and the cause.
public struct PageSourceError: Error, CustomStringConvertible, Sendable, Equatable {
    public let page: Int
    public let problem: String

    public init(page: Int, problem: String) {
        self.page = page
        self.problem = problem
    }

    public var description: String { "guest page \(page) (offset 0x\(String(page * 4096, radix: 16))): \(problem)" }
}
