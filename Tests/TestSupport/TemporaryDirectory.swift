import Foundation

/// A directory under /tmp removed when the test is done.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(_ label: String = "streamvm-test") throws {
        var template = Array("/tmp/\(label)-XXXXXX".utf8CString)
        guard let result = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw POSIXError(.EIO)
        }
        path = String(cString: result)
        chmod(path, 0o755)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func sub(_ name: String) -> String { "\(path)/\(name)" }
}
