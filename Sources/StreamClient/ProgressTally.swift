import Catalog
import Foundation

/// Counts bytes done against a total that grows as work is discovered, and reports both to the
/// caller's `ProgressHandler` (the CLI draws a bar from it). Thread-safe: chunk tasks report at once,
/// and the handler is called under the lock so that reports arrive in order (the last one is final).
final class ProgressTally: @unchecked Sendable {
    private let handler: ProgressHandler?
    private let lock = NSLock()
    private var done: Int64 = 0
    private var total: Int64 = 0

    init(_ handler: ProgressHandler?) { self.handler = handler }

    func add(total bytes: Int) {
        lock.withLock {
            total += Int64(bytes)
            handler?(done, total)
        }
    }

    func advance(_ bytes: Int) {
        lock.withLock {
            done += Int64(bytes)
            handler?(done, total)
        }
    }
}
