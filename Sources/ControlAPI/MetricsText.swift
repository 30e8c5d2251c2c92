import Foundation
import Hypervisor

/// Renders a machine's counters in the Prometheus text exposition format (version 0.0.4), named
/// `streamvm_vm_*` beside the server's `streamvm_http_*`, each labelled with the instance id.
enum MetricsText {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func render(_ metrics: MachineMetrics, instance: InstanceInfo, extra: [MetricSample]) -> String {
        var out = MetricsWriter(instance: instance.id)
        out.gauge("streamvm_vm_uptime_seconds", "Seconds since the machine started, paused time included.",
                  [([], Double(metrics.uptime.components.seconds) + Double(metrics.uptime.components.attoseconds) / 1e18)])
        out.gauge("streamvm_vm_state", "1 for the state the machine is in.",
                  [MachineState.notStarted, .running, .paused, .stopped].map { ([("state", $0.rawValue)], $0 == metrics.state ? 1 : 0) })
        out.gauge("streamvm_vm_vcpus", "vCPUs of the machine.", [([], Double(metrics.vcpuCount))])
        out.gauge("streamvm_vm_memory_bytes", "Guest RAM.", [([], Double(instance.memoryMiB) * 1_048_576)])
        out.counter("streamvm_vm_exits_total", "vCPU exits to the VMM, by reason, summed over vCPUs.",
                    VCPUExitKind.allCases.map { ([("reason", $0.rawValue)], Double(metrics.exits[$0] ?? 0)) })
        out.counter("streamvm_vm_page_faults_total", "Guest page first touches served by the lazy-memory handler.",
                    [([], Double(metrics.pageFaultsServed))])
        out.gauge("streamvm_vm_pages_installed", "Guest pages the lazy-memory handler has mapped, by fault or ahead of one.",
                  [([], Double(metrics.pagesInstalled))])
        out.counter("streamvm_device_requests_total", "Requests served per device (virtio: queue requests).",
                    metrics.devices.map { ([("device", $0.name)], Double($0.counters.requests)) })
        out.counter("streamvm_device_read_bytes_total", "Bytes moved to the guest per device (a disk: bytes read).",
                    metrics.devices.map { ([("device", $0.name)], Double($0.counters.bytesRead)) })
        out.counter("streamvm_device_written_bytes_total", "Bytes moved from the guest per device (a disk: bytes written).",
                    metrics.devices.map { ([("device", $0.name)], Double($0.counters.bytesWritten)) })
        out.counter("streamvm_device_errors_total", "Requests answered with an error per device.",
                    metrics.devices.map { ([("device", $0.name)], Double($0.counters.errors)) })
        out.counter("streamvm_device_throttled_seconds_total", "Seconds a device's requests were held back by its rate or latency limit (disks with --disk-rate or --disk-latency).",
                    metrics.devices.compactMap { device in device.counters.throttledSeconds.map { ([("device", device.name)], $0) } })
        out.counter("streamvm_device_guest_errors_total", "Guest-triggered refusals per device and reason (malformed rings, bad requests).",
                    metrics.devices.flatMap { device in
                        device.guestErrors.sorted { $0.key < $1.key }.map { ([("device", device.name), ("reason", $0.key)], Double($0.value)) }
                    })
        for sample in extra { out.sample(sample) }
        return out.text
    }
}

/// One extra metric a caller adds (stream-boot's bytes and stalls, for instance).
public struct MetricSample: Sendable, Equatable {
    public enum Kind: String, Sendable { case counter, gauge }
    public var name: String
    public var help: String
    public var kind: Kind
    public var labels: [(String, String)]
    public var value: Double

    public init(name: String, help: String, kind: Kind, labels: [(String, String)] = [], value: Double) {
        self.name = name
        self.help = help
        self.kind = kind
        self.labels = labels
        self.value = value
    }

    public static func == (lhs: MetricSample, rhs: MetricSample) -> Bool {
        lhs.name == rhs.name && lhs.help == rhs.help && lhs.kind == rhs.kind && lhs.value == rhs.value
            && lhs.labels.map(\.0) == rhs.labels.map(\.0) && lhs.labels.map(\.1) == rhs.labels.map(\.1)
    }
}

/// Accumulates families: HELP and TYPE once per name, then one line per sample.
private struct MetricsWriter {
    let instance: String
    var text = ""
    private var declared: Set<String> = []

    init(instance: String) { self.instance = instance }

    mutating func gauge(_ name: String, _ help: String, _ samples: [([(String, String)], Double)]) {
        family(name, help, "gauge", samples)
    }

    mutating func counter(_ name: String, _ help: String, _ samples: [([(String, String)], Double)]) {
        family(name, help, "counter", samples)
    }

    mutating func sample(_ sample: MetricSample) {
        family(sample.name, sample.help, sample.kind.rawValue, [(sample.labels, sample.value)])
    }

    private mutating func family(_ name: String, _ help: String, _ type: String, _ samples: [([(String, String)], Double)]) {
        if declared.insert(name).inserted {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        for (labels, value) in samples {
            let all = [("instance", instance)] + labels
            let rendered = all.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",")
            text += "\(name){\(rendered)} \(Self.format(value))\n"
        }
    }

    /// Label values escape backslash, double quote and newline (exposition format rules).
    private static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}
