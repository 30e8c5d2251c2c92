import Catalog

/// What a request's raw target names. The raw target (never a decoded form) is parsed, so that one
/// object has exactly one spelling and no decoding step can smuggle in a path a file system would
/// interpret differently.
public enum RequestTarget: Equatable, Sendable {
    case object(CatalogObject)
    case health
    case metrics
    case trace(appliance: String)

    /// Why a target was refused: `malformed` is a hostile or broken spelling (400), `notFound` is a
    /// well-formed path that names nothing this server has (404).
    public enum Refusal: Error, Equatable, Sendable {
        case malformed(String)
        case notFound
    }

    public static let healthPath = "/healthz"
    public static let metricsPath = "/metrics"
    public static let tracePrefix = "/v1/traces/"

    /// Parses a raw HTTP request target such as `/chunks/ab/ab….zst`.
    public static func parse(_ raw: String) -> Result<RequestTarget, Refusal> {
        let bytes = raw.utf8
        guard bytes.count <= CatalogObject.maximumPathLength + 8 else { return .failure(.malformed("request target is too long")) }
        guard bytes.first == UInt8(ascii: "/") else { return .failure(.malformed("request target must be an absolute path")) }
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "%"): return .failure(.malformed("percent-encoding is not accepted"))
            case UInt8(ascii: "?"), UInt8(ascii: "#"): return .failure(.malformed("query strings are not accepted"))
            case UInt8(ascii: "\\"): return .failure(.malformed("backslashes are not accepted"))
            case 0..<0x21, 0x7f...: return .failure(.malformed("control, space and non-ASCII bytes are not accepted"))
            default: continue
            }
        }
        // Dot segments and empty segments: no spelling of a path other than the canonical one.
        let segments = raw.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        for segment in segments where segment.isEmpty || segment == "." || segment == ".." {
            if raw == "/" { return .failure(.notFound) }
            return .failure(.malformed("empty or dot path segments are not accepted"))
        }
        if raw == healthPath { return .success(.health) }
        if raw == metricsPath { return .success(.metrics) }
        if raw.hasPrefix(tracePrefix) {
            let name = String(raw.dropFirst(tracePrefix.count))
            guard (try? ApplianceConfig.validateName(name, what: "appliance name", file: "request")) != nil else {
                return .failure(.malformed("appliance name must be 1-64 of [A-Za-z0-9._-], not starting with '.'"))
            }
            return .success(.trace(appliance: name))
        }
        guard let object = try? CatalogObject(path: raw) else { return .failure(.notFound) }
        // CatalogObject accepts one optional leading '/'; insist the spelling round-trips exactly.
        guard "/" + object.path == raw else { return .failure(.notFound) }
        return .success(.object(object))
    }
}
