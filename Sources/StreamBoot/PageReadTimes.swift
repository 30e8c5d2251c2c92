import Foundation

/// How long the page source took to produce each data page a fault asked for (from the fault
/// thread's call to the verified page in its buffer; the UFFDIO_COPY that follows is the VMM's),
/// split by whether the page's chunk was already on this host. `bench stream` reports the medians
/// as the fault-to-page latency of a streamed resume. Zero pages are not counted (they cost nothing).
public final class PageReadTimes: @unchecked Sendable {
    /// Samples kept per kind; later faults are counted but not kept (a resume faults a few thousand times).
    static let maximumSamples = 1 << 17

    public struct Summary: Sendable, Codable, Equatable {
        public var localCount: Int
        public var localP50Milliseconds: Double?
        public var localP99Milliseconds: Double?
        public var fetchedCount: Int
        public var fetchedP50Milliseconds: Double?
        public var fetchedP99Milliseconds: Double?
    }

    private let lock = NSLock()
    private var local: [Double] = []
    private var fetched: [Double] = []
    private var localCount = 0
    private var fetchedCount = 0

    public init() {}

    func add(seconds: Double, wasLocal: Bool) {
        lock.withLock {
            if wasLocal {
                localCount += 1
                if local.count < Self.maximumSamples { local.append(seconds) }
            } else {
                fetchedCount += 1
                if fetched.count < Self.maximumSamples { fetched.append(seconds) }
            }
        }
    }

    public var summary: Summary {
        let (local, fetched, localCount, fetchedCount) = lock.withLock { (self.local, self.fetched, self.localCount, self.fetchedCount) }
        return Summary(localCount: localCount, localP50Milliseconds: Self.percentile(local, 0.5), localP99Milliseconds: Self.percentile(local, 0.99),
                       fetchedCount: fetchedCount, fetchedP50Milliseconds: Self.percentile(fetched, 0.5),
                       fetchedP99Milliseconds: Self.percentile(fetched, 0.99))
    }

    /// Index ⌊n·f⌋ of the sorted values, in milliseconds (the benchmarks' convention).
    private static func percentile(_ values: [Double], _ fraction: Double) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))] * 1000
    }
}
