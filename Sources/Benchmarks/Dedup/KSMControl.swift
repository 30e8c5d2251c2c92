import Foundation

/// KSM's sysfs knobs (/sys/kernel/mm/ksm), set for a benchmark and put back afterwards, and ksmd's
/// CPU time. Restoring first writes run=2 (unmerge everything) so no merged page outlives the run.
struct KSMControl {
    static let directory = "/sys/kernel/mm/ksm"

    struct Settings: Equatable {
        var run: Int
        var pagesToScan: Int
        var sleepMilliseconds: Int
    }

    static var isAvailable: Bool { access(directory + "/run", W_OK) == 0 }

    static func read(_ name: String) throws -> Int {
        let path = directory + "/" + name
        let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let value = Int(text) else { throw BenchmarkFailure("\(path) holds \"\(text)\", not a number") }
        return value
    }

    static func write(_ name: String, _ value: Int) throws {
        let path = directory + "/" + name
        do { try "\(value)\n".write(toFile: path, atomically: false, encoding: .utf8) } catch {
            throw BenchmarkFailure("cannot write \(value) to \(path): \(error)")
        }
    }

    static func current() throws -> Settings {
        Settings(run: try read("run"), pagesToScan: try read("pages_to_scan"), sleepMilliseconds: try read("sleep_millisecs"))
    }

    static func apply(_ settings: Settings) throws {
        try write("pages_to_scan", settings.pagesToScan)
        try write("sleep_millisecs", settings.sleepMilliseconds)
        try write("run", settings.run)
    }

    /// Unmerges what KSM merged, then puts `settings` back.
    static func restore(_ settings: Settings) throws {
        try write("run", 2)
        try apply(settings)
    }

    /// ksmd's user + system CPU time in nanoseconds (0 when ksmd is not found).
    static func ksmdCPUNanoseconds() -> UInt64 {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        for entry in entries where entry.allSatisfy(\.isNumber) {
            guard let comm = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8),
                  comm.trimmingCharacters(in: .whitespacesAndNewlines) == "ksmd",
                  let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return 0 }
            let ticks = UInt64(sysconf(Int32(_SC_CLK_TCK)))
            return (user + system) * 1_000_000_000 / max(ticks, 1)
        }
        return 0
    }
}
