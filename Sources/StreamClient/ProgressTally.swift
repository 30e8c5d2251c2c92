import Catalog
import Foundation

/// Counts bytes done against a total that grows as work is discovered, and reports both to the
/// caller's `ProgressHandler` (the CLI draws a bar from it). Thread-safe: chunk tasks report at once.
final class ProgressTally: @unchecked Sendable {
    private let handler: ProgressHandler?
    private let lock = NSLock()
    private var done: Int64 = 0
    private var total: Int64 = 0

    init(_ handler: ProgressHandler?) { self.handler = handler }

    func add(total bytes: Int) {
        let snapshot = lock.withLock { () -> (Int64, Int64) in
            total += Int64(bytes)
            return (done, total)
        }
        handler?(snapshot.0, snapshot.1)
    }

    func advance(_ bytes: Int) {
        let snapshot = lock.withLock { () -> (Int64, Int64) in
            done += Int64(bytes)
            return (done, total)
        }
        handler?(snapshot.0, snapshot.1)
    }
}
