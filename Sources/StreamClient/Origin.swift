import Catalog
import Foundation

/// A base URL that serves a catalogue directory: `<base>/catalog.json`, `<base>/chunks/…`.
public struct Origin: Hashable, Sendable, CustomStringConvertible {
    public let baseURL: String
    public let isTLS: Bool

    /// Accepts `http://host[:port][/path]` or `https://…`; a trailing slash is dropped.
    public init(_ text: String) throws {
        var base = text
        while base.hasSuffix("/") { base.removeLast() }
        let lower = base.lowercased()
        if lower.hasPrefix("https://") {
            isTLS = true
        } else if lower.hasPrefix("http://") {
            isTLS = false
        } else {
            throw ClientError.invalidOrigin(text)
        }
        let rest = base.drop(while: { $0 != ":" }).dropFirst(3)
        guard !rest.isEmpty, !base.contains(where: { $0 == " " || $0 == "?" || $0 == "#" || $0.isNewline }) else {
            throw ClientError.invalidOrigin(text)
        }
        baseURL = base
    }

    public func url(for object: CatalogObject) -> String { "\(baseURL)/\(object.path)" }

    /// The first HTTP mode to try: HTTP/2 always, cleartext by prior knowledge.
    var preferredMode: HTTPMode { isTLS ? .h2OverTLS : .h2cPriorKnowledge }

    public var description: String { baseURL }

    /// Splits `<url>/<appliance>[@version]` into the origin and the appliance reference.
    public static func splitApplianceURL(_ text: String) throws -> (origin: Origin, appliance: String) {
        var trimmed = text
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { throw ClientError.invalidOrigin(text) }
        let appliance = String(trimmed[trimmed.index(after: slash)...])
        let origin = try Origin(String(trimmed[..<slash]))
        guard !appliance.isEmpty, !origin.baseURL.hasSuffix(":/") else { throw ClientError.invalidOrigin(text) }
        return (origin, appliance)
    }
}
