/// How the engine keeps a page it dropped from guest RAM; the page is rebuilt byte for byte from
/// this on its next touch (a userfaultfd MISSING fault).
enum StoredPage: Sendable {
    /// All zeros: nothing kept (the fault maps a zero page).
    case zero
    /// Equal to a reference page (identical pages of any machine share that one copy; a page that
    /// became a reference is stored this way too).
    case shared(ReferencePage)
    /// A zstd delta against a similar reference page (kept only under half a page).
    case patched(ReferencePage, [UInt8])
    /// zstd of the page itself (kept only when it saves at least the engine's threshold).
    case compressed([UInt8])

    var kind: DedupMechanism {
        switch self {
        case .zero: .zero
        case .shared: .shared
        case .patched: .patched
        case .compressed: .compressed
        }
    }

    /// Bytes held for this page beyond the shared references themselves.
    var encodedBytes: Int {
        switch self {
        case .zero, .shared: 0
        case let .patched(_, delta): delta.count
        case let .compressed(bytes): bytes.count
        }
    }

    var reference: ReferencePage? {
        switch self {
        case let .shared(reference), let .patched(reference, _): reference
        case .zero, .compressed: nil
        }
    }
}

/// The engine's ways of keeping a dropped page, for counters and reports.
public enum DedupMechanism: String, Sendable, Codable, CaseIterable {
    case zero, shared, patched, compressed
}
