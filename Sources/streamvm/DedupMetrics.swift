import ControlAPI
import Dedup

/// The dedup engine's counters on the control API's `/metrics` (`run --dedup share|full`).
enum DedupMetrics {
    static func samples(_ statistics: DedupStatistics) -> [MetricSample] {
        var samples = DedupMechanism.allCases.map { mechanism in
            MetricSample(name: "streamvm_dedup_\(mechanism.rawValue)_pages", help: "Guest pages dropped and kept by the dedup engine as \(mechanism.rawValue).",
                         kind: .gauge, value: Double(statistics.storedPages[mechanism] ?? 0))
        }
        samples += [
            MetricSample(name: "streamvm_dedup_saved_bytes", help: "Guest RAM given back minus what the engine holds to rebuild it.",
                         kind: .gauge, value: Double(statistics.bytesSaved)),
            MetricSample(name: "streamvm_dedup_reference_pages", help: "Reference pages the engine holds.",
                         kind: .gauge, value: Double(statistics.referencePages)),
            MetricSample(name: "streamvm_dedup_faults_served_total", help: "Dropped pages rebuilt on a guest touch.",
                         kind: .counter, value: Double(statistics.faultsServed.values.reduce(0, +))),
            MetricSample(name: "streamvm_dedup_scan_cpu_seconds_total", help: "CPU time of the engine's scan thread.",
                         kind: .counter, value: Double(statistics.scanCPUNanoseconds) / 1e9),
            MetricSample(name: "streamvm_dedup_paused_seconds_total", help: "Time the machine spent paused for drop batches.",
                         kind: .counter, value: Double(statistics.pausedNanoseconds) / 1e9),
        ]
        return samples
    }
}
