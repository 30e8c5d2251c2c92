import Catalog
import Foundation

/// Errors from fetching, caching and mirroring, each with a message a user can act on.
public enum ClientError: Error, CustomStringConvertible, Sendable {
    case noUsableOrigin(object: String, attempts: [String])
    /// Every origin answered 404 for an object that may legitimately be absent (models.json).
    case notPublished(object: String)
    case noOrigins
    case invalidOrigin(String)
    case curl(String)
    case outOfRange(offset: Int, length: Int, size: Int)
    case noArtifact(String)
    case cache(path: String, problem: String)
    case overlayMismatch(path: String, problem: String)
    case staleCatalog(origin: String, generation: Int, minimum: Int)
    /// A validly signed catalogue older than one this host already accepted from the same key.
    case rollback(origin: String, generation: Int, seen: Int, key: String, record: String)
    /// The host's record of catalogue generations (`SeenGenerations`) is unusable.
    case generationRecord(path: String, problem: String)
    case io(path: String, errno: Int32)
    /// A benchmark helper (nginx, curl) failed.
    case benchmark(String)
    /// The server did not store an uploaded trace.
    case traceRefused(url: String, status: Int, message: String)

    public var description: String {
        switch self {
        case .noUsableOrigin(let object, let attempts):
            return "\(object): no origin returned a verified copy (\(attempts.joined(separator: "; ")))"
        case .notPublished(let object):
            return "\(object) is not published on any origin"
        case .noOrigins:
            return "no origin given; pass an origin URL"
        case .invalidOrigin(let text):
            return "'\(text.prefix(200))' is not an http:// or https:// URL"
        case .curl(let problem):
            return "libcurl: \(problem)"
        case .outOfRange(let offset, let length, let size):
            return "read of \(length) bytes at \(offset) is outside the image of \(size) bytes"
        case .noArtifact(let role):
            return "the manifest has no \(role) artifact"
        case .cache(let path, let problem):
            return "chunk cache \(path): \(problem)"
        case .overlayMismatch(let path, let problem):
            return "overlay \(path): \(problem); delete it to start from the published image"
        case .staleCatalog(let origin, let generation, let minimum):
            return "\(origin) serves catalogue generation \(generation), older than generation \(minimum) the mirror already holds; refusing to roll back"
        case .rollback(let origin, let generation, let seen, let key, let record):
            return "\(origin) serves catalogue generation \(generation), older than generation \(seen) this host already accepted "
                + "from signing key \(key) (\(record)); refusing to roll back (a stale mirror or a replay; --allow-rollback accepts it)"
        case .generationRecord(let path, let problem):
            return "\(path): \(problem); it records the newest catalogue generation seen per signing key "
                + "(removing it forgets them, so an older catalogue would be accepted once)"
        case .io(let path, let errno):
            return "\(path): \(String(cString: strerror(errno)))"
        case .benchmark(let problem):
            return "benchmark: \(problem)"
        case .traceRefused(let url, let status, let message):
            return "\(url) refused the trace with HTTP \(status): \(message.prefix(200)) (check --token-file: it must hold the server's trace token)"
        }
    }
}
