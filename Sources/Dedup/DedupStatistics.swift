/// The engine's counters, host-wide (all attached machines), for metrics and the benchmark.
public struct DedupStatistics: Sendable, Equatable, Codable {
    /// Pages dropped from guest RAM and kept by the engine right now, per mechanism.
    public var storedPages: [DedupMechanism: Int] = [:]
    /// Bytes of deltas and compressed pages kept right now.
    public var encodedBytes = 0
    /// Reference pages alive (one page of host memory each).
    public var referencePages = 0
    /// Page size the figures use.
    public var pageSize = 4096
    /// Faults answered by rebuilding a page the engine kept, per mechanism.
    public var faultsServed: [DedupMechanism: Int] = [:]
    /// Scans run, pages examined, and pages whose drop was abandoned because the guest wrote them
    /// between the copy and the pause.
    public var scans = 0
    public var pagesExamined = 0
    public var racesAbandoned = 0
    /// CPU time of the scan thread (classification, encoding, drops), and time machines spent
    /// paused for drop batches, in nanoseconds.
    public var scanCPUNanoseconds: UInt64 = 0
    public var pausedNanoseconds: UInt64 = 0
    public var pauses = 0

    public init() {}

    public var droppedPages: Int { storedPages.values.reduce(0, +) }

    /// Guest RAM given back minus what the engine holds to rebuild it (references, deltas,
    /// compressed pages). Can be negative while references wait for pages to share them.
    public var bytesSaved: Int { droppedPages * pageSize - referencePages * pageSize - encodedBytes }

    /// Bytes saved by one mechanism: its dropped pages minus their encodings; references are
    /// charged to `shared` (the pages that share them), and patches' references too.
    public func bytesSaved(by mechanism: DedupMechanism) -> Int {
        let pages = storedPages[mechanism] ?? 0
        switch mechanism {
        case .zero: return pages * pageSize
        case .shared: return pages * pageSize - referencePages * pageSize
        case .patched, .compressed: return pages * pageSize - (encodedBytesBy[mechanism] ?? 0)
        }
    }

    /// Encoded bytes split by mechanism (patched, compressed).
    public var encodedBytesBy: [DedupMechanism: Int] = [:]
}
