/// Why `streamvm boot` could not start or finish an appliance, each with what a user can do.
public enum StreamBootError: Error, CustomStringConvertible, Sendable {
    case memorySnapshotNeedsLazyMemory(appliance: String)
    case unsupportedKernelFormat(String)
    case missingKernel(appliance: String)
    case invalidResources(String)
    case diskUnavailable(String)

    public var description: String {
        switch self {
        case .memorySnapshotNeedsLazyMemory(let appliance):
            return "\(appliance) is published with a memory snapshot, which this build cannot stream yet (lazy memory, issue #5); boot a version without one"
        case .unsupportedKernelFormat(let format):
            return "kernelFormat '\(format.prefix(40))' is not supported (use linux or flat)"
        case .missingKernel(let appliance):
            return "\(appliance) has no kernel artifact; stream-boot needs one"
        case .invalidResources(let problem):
            return problem
        case .diskUnavailable(let problem):
            return "the disk stopped answering: \(problem)"
        }
    }
}
