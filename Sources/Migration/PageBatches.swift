import Hypervisor

/// Guest RAM cut into aligned batches of pages, the unit one page request moves. Only pages that
/// are not all zeros travel (their digest is not 0); both sides know which from the digest table,
/// so a batch's body is exactly its data pages, in order.
struct PageBatches: Sendable {
    let image: MachineSnapshot.MemoryImage
    let pagesPerBatch: Int

    var pageCount: Int { image.pageCount }
    var batchCount: Int { (pageCount + pagesPerBatch - 1) / pagesPerBatch }

    func pages(ofBatch batch: Int) -> Range<Int> {
        let first = batch * pagesPerBatch
        return first..<min(first + pagesPerBatch, pageCount)
    }

    func batch(ofPage page: Int) -> Int { page / pagesPerBatch }

    /// Pages of `batch` that hold data, ascending: what its body carries.
    func dataPages(ofBatch batch: Int) -> [Int] {
        pages(ofBatch: batch).filter { image.digest(ofPage: $0) != 0 }
    }

    /// Batches with at least one data page (all-zero batches never cross the network).
    func batchesWithData() -> [Int] {
        (0..<batchCount).filter { !dataPages(ofBatch: $0).isEmpty }
    }
}
