/// Why a migration could not start or finish; each message says which side and what to do.
public enum MigrationError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The source machine is in a state a migration cannot start from.
    case notMigratable(String)
    /// The destination did not take the machine; the source machine runs on.
    case destinationRefused(url: String, problem: String)
    /// An offer, page request or completion notice was malformed or not authorised.
    case badRequest(String)
    /// A token file could not be used.
    case tokenFile(path: String, problem: String)
    /// The migration listener or the page server could not serve.
    case server(String)
    /// The destination never reported that it holds every page.
    case incomplete(String)

    public var description: String {
        switch self {
        case .notMigratable(let problem): return "cannot migrate: \(problem)"
        case .destinationRefused(let url, let problem): return "the destination \(url) did not take the machine (it keeps running here): \(problem)"
        case .badRequest(let problem): return problem
        case .tokenFile(let path, let problem): return "token file \(path): \(problem)"
        case .server(let problem): return problem
        case .incomplete(let problem): return "migration incomplete: \(problem)"
        }
    }
}
