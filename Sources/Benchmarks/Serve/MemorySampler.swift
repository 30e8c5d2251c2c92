import Foundation

/// Samples the resident memory of a process and its children (nginx's master and workers) while a
/// load round runs, and keeps the peak: what the server needed under that load, not at idle.
final class MemorySampler: @unchecked Sendable {
    /// Often enough to see a round of a few seconds many times, rarely enough to cost nothing.
    static let interval: useconds_t = 50_000

    private let root: Int32
    private let lock = NSLock()
    private var peak = 0
    private var running = true
    private let done = DispatchSemaphore(value: 0)

    init(process root: Int32) {
        self.root = root
        Thread { [self] in
            while lock.withLock({ running }) {
                let now = Self.residentBytes(treeOf: root)
                lock.withLock { peak = max(peak, now) }
                usleep(Self.interval)
            }
            done.signal()
        }.start()
    }

    /// Stops sampling and returns the peak resident bytes seen.
    func stop() -> Int {
        lock.withLock { running = false }
        done.wait()
        return lock.withLock { peak }
    }

    /// VmRSS of `pid` and of its children, recursively (Linux /proc).
    static func residentBytes(treeOf pid: Int32) -> Int {
        var total = residentBytes(of: pid)
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        for child in children.split(separator: " ").compactMap({ Int32($0) }) { total += residentBytes(treeOf: child) }
        return total
    }

    static func residentBytes(of pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return kilobytes * 1024
    }

    /// The 1-minute load average (/proc/loadavg), reported beside every figure: the host is shared.
    static func loadAverage() -> Double {
        let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return text.split(separator: " ").first.flatMap { Double($0) } ?? -1
    }
}
