import Foundation

/// Which answer a GET or HEAD of a verified object gets (RFC 9110 §13 conditional requests, §14
/// ranges), decided in one place for both carriers: the Hummingbird responder and the HTTP/2
/// event-loop fast path. Headers and bytes are the carrier's business.
struct ObjectAnswer: Equatable {
    enum Kind: Equatable {
        /// If-None-Match matched the object's entity tag: 304, no body.
        case notModified
        /// 200 with the whole object.
        case whole
        /// 206 with one range.
        case partial(ByteRange)
        /// The range lies outside the object: 416.
        case unsatisfiable
    }

    let kind: Kind
    let size: Int

    /// Decides from the request's conditional and range header values (nil when absent).
    static func decide(size: Int, entityTag: String, ifNoneMatch: String?, range: String?, ifRange: String?) -> ObjectAnswer {
        if let ifNoneMatch, matches(ifNoneMatch, entityTag: entityTag) { return ObjectAnswer(kind: .notModified, size: size) }
        // An If-Range that names another representation asks for the whole object (§13.1.5).
        if let ifRange, ifRange != entityTag { return ObjectAnswer(kind: .whole, size: size) }
        switch ByteRange.parse(range, size: size) {
        case .whole: return ObjectAnswer(kind: .whole, size: size)
        case .partial(let slice): return ObjectAnswer(kind: .partial(slice), size: size)
        case .unsatisfiable: return ObjectAnswer(kind: .unsatisfiable, size: size)
        }
    }

    var statusCode: Int {
        switch kind {
        case .notModified: return 304
        case .whole: return 200
        case .partial: return 206
        case .unsatisfiable: return 416
        }
    }

    /// The bytes the answer carries (nil: no body, whatever the method).
    var slice: ByteRange? {
        switch kind {
        case .whole: return ByteRange(offset: 0, length: size)
        case .partial(let slice): return slice
        case .notModified, .unsatisfiable: return nil
        }
    }

    /// The Content-Range value, for 206 and 416.
    var contentRange: String? {
        switch kind {
        case .partial(let slice): return "bytes \(slice.offset)-\(slice.lastByte)/\(size)"
        case .unsatisfiable: return "bytes */\(size)"
        case .notModified, .whole: return nil
        }
    }

    /// Weak comparison (RFC 9110 §13.1.2): `*` or any listed tag, with or without `W/`.
    static func matches(_ header: String, entityTag: String) -> Bool {
        if header.trimmingCharacters(in: .whitespaces) == "*" { return true }
        return header.split(separator: ",").contains { candidate in
            var tag = candidate.trimmingCharacters(in: .whitespaces)
            if tag.hasPrefix("W/") { tag.removeFirst(2) }
            return tag == entityTag
        }
    }
}
