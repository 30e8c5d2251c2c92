import Foundation
import Hypervisor
import StreamClient

/// The destination's guest RAM during a migration: a `PageSource` whose pages come from the
/// source's page server, a batch per request over the process's HTTP/2 fetcher. A guest fault asks
/// at demand priority, ahead of the background transfer's requests (`readPageAhead`), and a demand
/// read of a batch already queued for the background moves it to the front. Every page is checked
/// against the digest the source sent with the machine's state before it is handed out; a page that
/// cannot be had within `linkLossToleranceSeconds` (the source died, the link stayed down) is an
/// error, and the page-fault handler then stops the machine rather than map a wrong page.
final class RemotePageSource: PageSource, @unchecked Sendable {
    /// Batches kept after arrival for the pages of them not yet installed; older ones are dropped
    /// (a page read again later is fetched again).
    static let keptBatches = 256
    /// Pause between attempts while the link is down.
    static let retryPauseSeconds = 0.2

    let pageSize = GuestMemory.pageSize
    var pageCount: Int { batches.pageCount }
    let batches: PageBatches
    let pagesURL: String
    let fetcher: Fetcher
    let linkLossToleranceSeconds: Double

    /// One batch: in flight (readers wait on the condition) or arrived (its data pages' bytes).
    private enum Entry {
        case fetching(RequestID, demand: Bool)
        case arrived(Data)
        case failed(String)
    }

    private let condition = NSCondition()
    private var entries: [Int: Entry] = [:]
    private var arrivalOrder: [Int] = []
    private var counters = Statistics()

    struct Statistics: Sendable {
        var batchesFetched = 0
        var bytesReceived = 0
        var demandBatches = 0
        /// Data pages handed out because the guest touched them (the rest were installed ahead).
        var pagesOnDemand = 0
        var pagesInstalled = 0
    }

    init(batches: PageBatches, pagesURL: String, fetcher: Fetcher, linkLossToleranceSeconds: Double) {
        self.batches = batches
        self.pagesURL = pagesURL
        self.fetcher = fetcher
        self.linkLossToleranceSeconds = linkLossToleranceSeconds
    }

    var statistics: Statistics {
        condition.lock()
        defer { condition.unlock() }
        return counters
    }

    func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        try read(index, into: buffer, demand: true)
    }

    func readPageAhead(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        try read(index, into: buffer, demand: false)
    }

    /// A fault installs the whole batch its page came in: one fault, one request, 16 pages.
    func faultAroundPages(of index: Int) -> Range<Int> { batches.pages(ofBatch: batches.batch(ofPage: index)) }

    private func read(_ index: Int, into buffer: UnsafeMutableRawBufferPointer, demand: Bool) throws -> PageContent {
        guard (0..<pageCount).contains(index), buffer.count >= pageSize else { throw PageSourceError(page: index, problem: "outside guest RAM") }
        let page = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<pageSize])
        let expected = batches.image.digest(ofPage: index)
        guard expected != 0 else { return .zero }
        let batch = batches.batch(ofPage: index)
        let body = try batchBody(batch, demand: demand, page: index)
        let dataPages = batches.dataPages(ofBatch: batch)
        guard let position = dataPages.firstIndex(of: index) else { throw PageSourceError(page: index, problem: "not a data page of batch \(batch)") }
        body.withUnsafeBytes { bytes in
            page.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[(position * pageSize)..<((position + 1) * pageSize)]))
        }
        let digest = PageDigest.digest(UnsafeRawBufferPointer(page))
        guard digest == expected else {
            throw PageSourceError(page: index, problem: "the source sent bytes whose digest 0x\(String(digest, radix: 16)) is not the page's 0x\(String(expected, radix: 16)) from the migrated state")
        }
        condition.lock()
        counters.pagesInstalled += 1
        if demand { counters.pagesOnDemand += 1 }
        condition.unlock()
        return .data
    }

    /// The batch's body, fetched once however many readers want it; retried while the link is down.
    private func batchBody(_ batch: Int, demand: Bool, page: Int) throws -> Data {
        let start = monotonicSeconds()
        while true {
            condition.lock()
            switch entries[batch] {
            case .arrived(let data)?:
                condition.unlock()
                return data
            case .fetching(let id, let wasDemand)?:
                if demand && !wasDemand {
                    entries[batch] = .fetching(id, demand: true)
                    fetcher.reprioritize(id, to: .demand)
                }
                condition.wait()
                condition.unlock()
                continue
            case .failed(let problem)?:
                entries[batch] = nil
                condition.unlock()
                let elapsed = monotonicSeconds() - start
                guard elapsed < linkLossToleranceSeconds else {
                    throw PageSourceError(page: page, problem: "batch \(batch) could not be fetched from the migration source for \(String(format: "%.1f", elapsed)) s: \(problem)")
                }
                Thread.sleep(forTimeInterval: Self.retryPauseSeconds)
                continue
            case nil:
                let id = fetcher.makeRequestID()
                entries[batch] = .fetching(id, demand: demand)
                if demand { counters.demandBatches += 1 }
                condition.unlock()
                submit(batch, id: id, demand: demand)
            }
        }
    }

    private func submit(_ batch: Int, id: RequestID, demand: Bool) {
        let expected = batches.dataPages(ofBatch: batch).count * pageSize
        let request = FetchRequest(url: "\(pagesURL)/pages/\(batch)", priority: demand ? .demand : .prefetch(rank: Double(batch)),
                                   mode: .h2cPriorKnowledge, maximumBytes: expected, expectedBytes: expected)
        _ = fetcher.submit(request, id: id) { [self] result in
            condition.lock()
            switch result {
            case .success(let body):
                entries[batch] = .arrived(body.data)
                arrivalOrder.append(batch)
                counters.batchesFetched += 1
                counters.bytesReceived += body.data.count
                if arrivalOrder.count > Self.keptBatches {
                    let oldest = arrivalOrder.removeFirst()
                    if case .arrived? = entries[oldest] { entries[oldest] = nil }
                }
            case .failure(let error):
                entries[batch] = .failed("\(error)")
            }
            condition.broadcast()
            condition.unlock()
        }
    }
}
