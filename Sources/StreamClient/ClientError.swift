import Foundation

/// Errors from fetching, caching and mirroring, each with a message a user can act on.
public enum ClientError: Error, CustomStringConvertible, Sendable {
    case noUsableOrigin(object: String, attempts: [String])

    public var description: String {
        switch self {
        case .noUsableOrigin(let object, let attempts):
            return "\(object): no origin returned a verified copy (\(attempts.joined(separator: "; ")))"
        }
    }
}
