/// Errors of the Dedup module.
public enum DedupError: Error, Equatable, CustomStringConvertible {
    /// A memory space handed to the scanner is not a whole number of pages.
    case unalignedSpace(name: String, length: Int, pageSize: Int)
    /// The engine was asked for something it cannot do; the message says what to change.
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case let .unalignedSpace(name, length, pageSize):
            "memory space \(name) is \(length) bytes, not a multiple of the \(pageSize)-byte page size"
        case let .invalidConfiguration(message):
            "dedup: \(message)"
        }
    }
}
