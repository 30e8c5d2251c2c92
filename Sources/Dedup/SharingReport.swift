/// What identical-page sharing would save across the scanned memory spaces.
public struct SharingReport: Sendable, Equatable {
    /// Page size the scan used.
    public var pageSize: Int
    /// All pages scanned.
    public var pages: Int
    /// Pages that are all zero: sharing maps them to the one zero page.
    public var zeroPages: Int
    /// Distinct non-zero contents (each would keep one frame).
    public var distinctPages: Int
    /// Non-zero pages whose bytes equal an earlier page's (each would be a shared mapping).
    public var duplicatePages: Int
    /// Fingerprint matches that were not byte-identical (counted so a weak hash shows up).
    public var fingerprintCollisions: Int

    /// Frames needed after sharing: one per distinct content, none for zero pages.
    public var framesAfterSharing: Int { distinctPages }

    /// Bytes freed by sharing identical and zero pages.
    public var bytesSaved: Int { (zeroPages + duplicatePages) * pageSize }

    /// Share of scanned memory that sharing frees, 0...1.
    public var savedFraction: Double { pages == 0 ? 0 : Double(zeroPages + duplicatePages) / Double(pages) }
}
