/// Why `streamvm boot` could not start or finish an appliance, each with what a user can do.
public enum StreamBootError: Error, CustomStringConvertible, Sendable {
    case invalidSnapshot(String)
    case missingKernel(appliance: String)
    case invalidResources(String)
    case diskUnavailable(String)

    public var description: String {
        switch self {
        case .invalidSnapshot(let problem):
            return "cannot resume the published snapshot: \(problem)"
        case .missingKernel(let appliance):
            return "\(appliance) has no kernel artifact; stream-boot needs one"
        case .invalidResources(let problem):
            return problem
        case .diskUnavailable(let problem):
            return "the disk stopped answering: \(problem)"
        }
    }
}
