import Foundation

/// Errors from publishing and serving, each with a message a user can act on.
public enum ServerError: Error, CustomStringConvertible, Sendable {
    case missingArtifact(path: String)
    case emptyArtifact(path: String)
    case unreadableArtifact(path: String, errno: Int32)
    case invalidApplianceConfig(path: String, problem: String)

    public var description: String {
        switch self {
        case .missingArtifact(let path): return "\(path): required artifact is missing"
        case .emptyArtifact(let path): return "\(path): artifact is empty"
        case .unreadableArtifact(let path, let errno): return "\(path): cannot read: \(String(cString: strerror(errno)))"
        case .invalidApplianceConfig(let path, let problem): return "\(path): \(problem)"
        }
    }
}
