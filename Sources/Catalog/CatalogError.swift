import Foundation

/// Everything that can go wrong reading, writing or verifying catalogue objects.
/// Each message names the object and says what a user can do about it.
public enum CatalogError: Error, Equatable, CustomStringConvertible, Sendable {
    case invalidDigest(String)
    case invalidObjectName(String)
    case malformed(file: String, problem: String)
    case tooLarge(file: String, size: Int, limit: Int)
    case digestMismatch(object: String, actual: String)
    case unsigned(file: String)
    case badSignature(file: String)
    case untrustedKey(file: String, key: String)
    case invalidKeyFile(path: String, problem: String)
    case untrustworthyTrustDirectory(path: String, problem: String)
    case compression(String)
    case decompression(object: String, problem: String)
    case io(path: String, errno: Int32)
    case unknownAppliance(String)

    public var description: String {
        switch self {
        case .invalidDigest(let text):
            return "'\(text.prefix(80))' is not a SHA-256 digest (64 lowercase hex digits)"
        case .invalidObjectName(let name):
            return "'\(name.prefix(200))' is not a catalogue object name"
        case .malformed(let file, let problem):
            return "\(file): malformed: \(problem)"
        case .tooLarge(let file, let size, let limit):
            return "\(file): \(size) bytes exceeds the limit of \(limit) bytes"
        case .digestMismatch(let object, let actual):
            return "\(object): content hashes to \(actual), not to its name; the copy is damaged or tampered with"
        case .unsigned(let file):
            return "\(file): catalogue is not signed; publish with --key, or pass --insecure to accept it"
        case .badSignature(let file):
            return "\(file): signature does not verify; the catalogue was altered or signed with another key"
        case .untrustedKey(let file, let key):
            return "\(file): signed by key \(key), which is not the trusted key (--trust) nor one in the trust directory"
        case .invalidKeyFile(let path, let problem):
            return "\(path): not a StreamVM key file: \(problem)"
        case .untrustworthyTrustDirectory(let path, let problem):
            return "\(path): trust directory refused: \(problem)"
        case .compression(let problem):
            return "zstd compression failed: \(problem)"
        case .decompression(let object, let problem):
            return "\(object): cannot decompress: \(problem)"
        case .io(let path, let errno):
            return "\(path): \(String(cString: strerror(errno)))"
        case .unknownAppliance(let name):
            return "no appliance '\(name)' in the catalogue"
        }
    }
}
