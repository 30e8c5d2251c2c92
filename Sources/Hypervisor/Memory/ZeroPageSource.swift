/// Fresh RAM as a page source: every page is zeros. What a booted machine that registers
/// userfaultfd (`MachineConfiguration.pageSource`) serves for pages nothing else knows — and what a
/// source that keeps some pages elsewhere (dedup, migration) answers for all the others.
public final class ZeroPageSource: PageSource {
    public let pageSize: Int
    public let pageCount: Int

    /// A source for `memorySize` bytes of guest RAM.
    public init(memorySize: Int, pageSize: Int = GuestMemory.pageSize) {
        self.pageSize = pageSize
        pageCount = memorySize / pageSize
    }

    public func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        guard index >= 0, index < pageCount else { throw PageSourceError(page: index, problem: "beyond the \(pageCount)-page guest RAM") }
        return .zero
    }
}
