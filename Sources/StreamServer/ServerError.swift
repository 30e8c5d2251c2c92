import Catalog
import Foundation

/// Errors from publishing and serving, each with a message a user can act on.
public enum ServerError: Error, CustomStringConvertible, Sendable {
    case missingArtifact(path: String)
    case noArtifacts(path: String)
    case emptyArtifact(path: String)
    case unreadableArtifact(path: String, errno: Int32)
    case invalidApplianceConfig(path: String, problem: String)
    case artifactChanged(path: String)
    case catalogKeyMismatch(path: String)
    case learningKeyMismatch(path: String)
    case versionConflict(appliance: String, version: String)
    case io(path: String, errno: Int32)
    case objectTooLarge(path: String, size: Int, limit: Int)
    case unstableFile(path: String)
    case invalidTokenFile(path: String, problem: String)
    case invalidOption(String)
    case uploadFailed(object: String, status: Int, message: String)
    case connectionFailed(url: String, problem: String)
    case noTraces(appliance: String)

    public var description: String {
        switch self {
        case .missingArtifact(let path): return "\(path): required artifact is missing"
        case .noArtifacts(let path):
            return "\(path): no artifact to publish; an appliance needs at least one of \(ArtifactRole.allCases.map(\.fileName).joined(separator: ", "))"
        case .emptyArtifact(let path): return "\(path): artifact is empty"
        case .unreadableArtifact(let path, let errno): return "\(path): cannot read: \(String(cString: strerror(errno)))"
        case .invalidApplianceConfig(let path, let problem): return "\(path): \(problem)"
        case .artifactChanged(let path): return "\(path): file shrank while it was being published; publish again once it is stable"
        case .learningKeyMismatch(let path):
            return "\(path): the catalogue is neither signed by this key nor delegates models to it; learn with the model key the catalogue names (publish --model-key) or the catalogue key"
        case .catalogKeyMismatch(let path):
            return "\(path): the catalogue is signed by another key (or unsigned); publish with the key that signed it"
        case .versionConflict(let appliance, let version):
            return "\(appliance)@\(version) is already published with different content; publish it under a new version"
        case .io(let path, let errno): return "\(path): \(String(cString: strerror(errno)))"
        case .objectTooLarge(let path, let size, let limit): return "\(path): \(size) bytes exceeds the limit of \(limit) bytes for this kind of object"
        case .unstableFile(let path): return "\(path): the file kept changing while it was read; is something rewriting the catalogue in place?"
        case .invalidTokenFile(let path, let problem): return "\(path): not a usable token file: \(problem)"
        case .invalidOption(let problem): return problem
        case .uploadFailed(let object, let status, let message): return "upload of \(object) failed with HTTP \(status): \(message)"
        case .connectionFailed(let url, let problem): return "\(url): \(problem)"
        case .noTraces(let appliance):
            return "no usable traces of \(appliance) for its current version; boot it with --upload-trace first"
        }
    }
}
