/// Pages held in this process's memory: for tests, benchmarks, and sources that were read whole.
/// All-zero pages are found once at creation and reported as `.zero`.
public final class InMemoryPageSource: PageSource, @unchecked Sendable {
    public let pageSize: Int
    public let pageCount: Int
    private let bytes: UnsafeMutableRawBufferPointer
    private let zeroPages: [Bool]

    /// `image` is the whole of guest RAM; its length must be a multiple of `pageSize`.
    public init(image: [UInt8], pageSize: Int = GuestMemory.pageSize) throws {
        guard pageSize > 0, image.count % pageSize == 0 else {
            throw HypervisorError.invalidConfiguration("memory image of \(image.count) bytes is not a whole number of \(pageSize)-byte pages")
        }
        self.pageSize = pageSize
        pageCount = image.count / pageSize
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(image.count, 1), alignment: pageSize)
        bytes.copyBytes(from: image)
        var zeroPages = [Bool](repeating: false, count: pageCount)
        for page in 0..<pageCount {
            zeroPages[page] = PageDigest.isZero(UnsafeRawBufferPointer(rebasing: bytes[(page * pageSize)..<((page + 1) * pageSize)]))
        }
        self.zeroPages = zeroPages
    }

    deinit { bytes.deallocate() }

    public func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        guard index >= 0, index < pageCount else { throw PageSourceError(page: index, problem: "beyond the \(pageCount)-page image") }
        if zeroPages[index] { return .zero }
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[(index * pageSize)..<((index + 1) * pageSize)]))
        return .data
    }
}
