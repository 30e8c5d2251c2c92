import Foundation

/// A directory under /tmp removed when the test is done.
final class TemporaryDirectory: @unchecked Sendable {
    let path: String

    init(_ label: String = "streamvm-test") throws {
        var template = Array("/tmp/\(label)-XXXXXX".utf8CString)
        guard let result = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw POSIXError(.EIO)
        }
        path = String(cString: result)
        chmod(path, 0o755)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func sub(_ name: String) -> String { "\(path)/\(name)" }
}

/// Runs blocking work (a publish, process waits, polling loops) on a thread of its own, so it cannot
/// starve the small cooperative pool that the async tests running in parallel depend on. Not
/// `DispatchQueue.global()`: its non-overcommit width is the core count (2 here), so a few blocking
/// waits of parallel tests delayed every other test's work by seconds.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
