import Foundation

/// The one place benchmarks compute order statistics and describe the host they ran on.
public enum Statistics {
    /// The middle value (the upper middle for an even count); nil for no values.
    public static func median(_ values: [Double]) -> Double? { percentile(values, 0.5) }

    /// The sorted value at index ⌊count × fraction⌋ (the convention every report here has used, so
    /// figures stay comparable across runs); nil for no values.
    public static func percentile(_ values: [Double], _ fraction: Double) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, max(0, Int(Double(sorted.count) * fraction)))]
    }

    /// Milliseconds in a `Duration`.
    public static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }
}

/// Facts about the machine a figure was measured on, recorded in every report.
public enum HostFacts {
    public static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        return String(cString: buffer)
    }

    /// The three load averages from /proc/loadavg, as text ("1.02 0.87 0.55").
    public static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "unknown"
    }
}
