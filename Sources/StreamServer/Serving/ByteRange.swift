/// A single byte range from a `Range` header (RFC 9110 §14.1.2), resolved against an object's size.
public struct ByteRange: Equatable, Sendable {
    public let offset: Int
    public let length: Int

    public var lastByte: Int { offset + length - 1 }

    /// What a `Range` header asks of an object of `size` bytes.
    public enum Request: Equatable, Sendable {
        /// No usable range: serve the whole object (absent, not `bytes=`, malformed, or several
        /// ranges, which RFC 9110 lets a server answer with the whole representation).
        case whole
        case partial(ByteRange)
        /// Syntactically valid but outside the object: 416.
        case unsatisfiable
    }

    /// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`; numbers are capped at 18 digits so that
    /// hostile input cannot overflow.
    public static func parse(_ header: String?, size: Int) -> Request {
        guard let header else { return .whole }
        let unit = "bytes="
        guard header.hasPrefix(unit) else { return .whole }
        let spec = header.dropFirst(unit.count).trimmingSpaces
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash].trimmingSpaces, last = spec[spec.index(after: dash)...].trimmingSpaces
        func number(_ text: Substring) -> Int? {
            guard !text.isEmpty, text.count <= 18, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return Int(text)
        }
        if first.isEmpty {
            // Suffix range: the last n bytes.
            guard let suffix = number(last) else { return .whole }
            guard suffix > 0, size > 0 else { return .unsatisfiable }
            let length = min(suffix, size)
            return .partial(ByteRange(offset: size - length, length: length))
        }
        guard let start = number(first) else { return .whole }
        var end = size - 1
        if !last.isEmpty {
            guard let requestedEnd = number(last) else { return .whole }
            guard requestedEnd >= start else { return .whole }
            end = min(requestedEnd, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .partial(ByteRange(offset: start, length: end - start + 1))
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return text
    }
}
