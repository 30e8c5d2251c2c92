/// The engine's knobs: what it may do, its CPU budget, and the page ages (scans without a write or
/// a fault) at which each mechanism applies — hot pages are left alone.
public struct DedupConfiguration: Sendable, Equatable {
    public var mode: DedupMode
    /// Pages examined (copied, hashed, maybe encoded) per machine per scan: the CPU budget.
    public var pagesPerScan: Int
    /// Time between scans of the background loop.
    public var interval: Duration
    /// Zero and identical pages are dropped after this many cold scans.
    public var shareAge: Int
    /// Similar pages are patched after this many (full mode).
    public var patchAge: Int
    /// Pages are compressed after this many (full mode), if that saves at least `compressMinSaving` bytes.
    public var compressAge: Int
    public var compressMinSaving: Int
    /// A cold page that matched nothing becomes a reference after this many: the engine keeps its
    /// copy (instead of the guest), so later identical or similar pages can use it.
    public var referenceAge: Int

    public init(mode: DedupMode, pagesPerScan: Int = 4096, interval: Duration = .milliseconds(500),
                shareAge: Int = 1, patchAge: Int = 2, compressAge: Int = 3, compressMinSaving: Int = 1024, referenceAge: Int = 3) {
        self.mode = mode
        self.pagesPerScan = pagesPerScan
        self.interval = interval
        self.shareAge = shareAge
        self.patchAge = patchAge
        self.compressAge = compressAge
        self.compressMinSaving = compressMinSaving
        self.referenceAge = referenceAge
    }
}
