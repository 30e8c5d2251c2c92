import ArgumentParser
import Catalog
import Foundation

/// How the CLI reports a failure that happened while a command ran (not while its arguments were
/// parsed): one line on stderr, `streamvm: <what went wrong>`, no usage banner, exit status 1 unless
/// the command chose its own (`ExitCode`). Exit statuses are listed in `ExitStatus`.
enum ErrorReport {
    static func message(for error: any Error) -> String {
        switch error {
        case let error as ValidationError:
            return error.message
        case let error as CocoaError:
            return describe(error)
        case let error as DecodingError:
            return DecodingProblem.describe(error)
        case let error as any CustomStringConvertible:
            return error.description
        default:
            return "\(error)"
        }
    }

    /// Foundation's file errors, as "<path>: <reason>".
    private static func describe(_ error: CocoaError) -> String {
        let path = error.filePath ?? error.url?.path ?? "file"
        if let posix = error.underlying as? POSIXError {
            return "\(path): \(String(cString: strerror(posix.code.rawValue)))"
        }
        switch error.code {
        case .fileReadNoSuchFile, .fileNoSuchFile: return "\(path): no such file"
        case .fileReadNoPermission, .fileWriteNoPermission: return "\(path): permission denied"
        case .fileWriteOutOfSpace: return "\(path): no space left on device"
        default: return "\(path): \(error.localizedDescription)"
        }
    }
}

private extension CocoaError {
    var underlying: (any Error)? { userInfo[NSUnderlyingErrorKey] as? any Error }
}
