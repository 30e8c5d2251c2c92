import Foundation

/// A one-line progress bar on stderr, drawn only when stderr is a terminal and redrawn at most ten
/// times a second, so piping a command's output into a file or CI log stays clean.
final class TerminalProgressBar: @unchecked Sendable {
    private let label: String
    private let enabled: Bool
    private let lock = NSLock()
    private let started = Date()
    private var lastDraw = Date.distantPast
    /// Redraw interval; faster only costs CPU and flicker.
    private static let minimumRedrawInterval = 0.1
    private static let width = 30

    init(label: String, enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.label = label
        self.enabled = enabled
    }

    func update(done: Int64, total: Int64) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = Date()
        guard done >= total || now.timeIntervalSince(lastDraw) >= Self.minimumRedrawInterval else { return }
        lastDraw = now
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let filled = Int(fraction * Double(Self.width))
        let elapsed = max(now.timeIntervalSince(started), 1e-3)
        let rate = Double(done) / 1e6 / elapsed
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: Self.width - filled)
        let line = "\r\(label) [\(bar)]" + String(format: " %5.1f%% %8.1f/%.1f MB %7.1f MB/s", fraction * 100,
                                                      Double(done) / 1e6, Double(total) / 1e6, rate)
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Ends the bar's line so later output starts on a fresh one.
    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }

    var handler: @Sendable (Int64, Int64) -> Void { { [self] done, total in update(done: done, total: total) } }
}
