import Foundation

/// CPU time (user + system) a process and its children (nginx's workers) have used so far, from
/// Linux /proc. Differences across a round give CPU per request: a figure that, unlike requests per
/// second, hardly moves when other work on a shared host takes the cores away.
enum ProcessCPUTime {
    /// Seconds of CPU used by `pid` and, recursively, its live children.
    static func seconds(treeOf pid: Int32) -> Double {
        var total = seconds(of: pid)
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        for child in children.split(separator: " ").compactMap({ Int32($0) }) { total += seconds(treeOf: child) }
        return total
    }

    /// utime + stime of one process (fields 14 and 15 of /proc/PID/stat, in clock ticks).
    static func seconds(of pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let afterName = stat.lastIndex(of: ")") else { return 0 }
        // Fields after the parenthesised command name start with field 3 (state).
        let fields = stat[stat.index(after: afterName)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
