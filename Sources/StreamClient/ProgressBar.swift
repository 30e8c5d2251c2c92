import Foundation

/// A one-line progress display on standard error, drawn only when it is a terminal (logs and pipes
/// stay clean) and at most ten times a second.
public final class ProgressBar: @unchecked Sendable {
    private let label: String
    private let enabled: Bool
    private let lock = NSLock()
    private var total: Int
    private var done = 0
    private var lastDraw = 0.0
    private let started = monotonicSeconds()
    /// Redraws per second at most; more flickers and costs syscalls for nothing.
    static let redrawInterval = 0.1

    public init(label: String, totalBytes: Int, enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.label = label
        self.total = totalBytes
        self.enabled = enabled
    }

    public func add(total bytes: Int) {
        lock.lock()
        total += bytes
        lock.unlock()
    }

    public func advance(_ bytes: Int) {
        lock.lock()
        done += bytes
        let now = monotonicSeconds()
        let draw = enabled && now - lastDraw >= Self.redrawInterval
        if draw { lastDraw = now }
        let (done, total) = (self.done, self.total)
        lock.unlock()
        if draw { render(done: done, total: total, now: now, final: false) }
    }

    public var completedBytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return done
    }

    public func finish() {
        lock.lock()
        let (done, total) = (self.done, self.total)
        lock.unlock()
        if enabled { render(done: done, total: total, now: monotonicSeconds(), final: true) }
    }

    private func render(done: Int, total: Int, now: Double, final: Bool) {
        let width = 30
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let filled = Int(fraction * Double(width))
        let rate = Double(done) / max(0.001, now - started)
        let line = String(format: "\r%@ [%@%@] %5.1f%% %@ / %@ %@/s", label,
                          String(repeating: "#", count: filled), String(repeating: ".", count: width - filled),
                          fraction * 100, Self.format(done), Self.format(total), Self.format(Int(rate)))
        FileHandle.standardError.write(Data((line + (final ? "\n" : "")).utf8))
    }

    static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}
