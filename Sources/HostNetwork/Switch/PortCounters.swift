import Foundation
import Hypervisor
import Synchronization

/// Counters of one switch port, written from the guest's device thread (frames in, ingress drops)
/// and the switch thread (frames out, egress drops) without a lock.
final class PortCounters: Sendable {
    let framesIn = Atomic<UInt64>(0)
    let bytesIn = Atomic<UInt64>(0)
    let framesOut = Atomic<UInt64>(0)
    let bytesOut = Atomic<UInt64>(0)
    private let runt = Atomic<UInt64>(0)
    private let oversized = Atomic<UInt64>(0)
    private let spoofedSource = Atomic<UInt64>(0)
    private let badOffload = Atomic<UInt64>(0)
    private let queueFull = Atomic<UInt64>(0)
    private let receiveQueueFull = Atomic<UInt64>(0)
    private let offloadUnsupported = Atomic<UInt64>(0)
    private let portClosed = Atomic<UInt64>(0)

    init() {}

    /// Runs `body` on the counter of `reason` (atomics cannot be stored in an array).
    private func withCounter<R>(_ reason: DropReason, _ body: (borrowing Atomic<UInt64>) -> R) -> R {
        switch reason {
        case .runt: body(runt)
        case .oversized: body(oversized)
        case .spoofedSource: body(spoofedSource)
        case .badOffload: body(badOffload)
        case .queueFull: body(queueFull)
        case .receiveQueueFull: body(receiveQueueFull)
        case .offloadUnsupported: body(offloadUnsupported)
        case .portClosed: body(portClosed)
        }
    }

    func countIn(bytes: Int) {
        framesIn.wrappingAdd(1, ordering: .relaxed)
        bytesIn.wrappingAdd(UInt64(bytes), ordering: .relaxed)
    }

    func countOut(bytes: Int) {
        framesOut.wrappingAdd(1, ordering: .relaxed)
        bytesOut.wrappingAdd(UInt64(bytes), ordering: .relaxed)
    }

    func countDrop(_ reason: DropReason, frames: UInt64 = 1) {
        guard frames > 0 else { return }
        withCounter(reason) { $0.wrappingAdd(frames, ordering: .relaxed) }
    }

    func snapshot(port: String, mac: MACAddress?) -> PortStatistics {
        PortStatistics(port: port, mac: mac?.description,
                       framesIn: framesIn.load(ordering: .relaxed), bytesIn: bytesIn.load(ordering: .relaxed),
                       framesOut: framesOut.load(ordering: .relaxed), bytesOut: bytesOut.load(ordering: .relaxed),
                       drops: Dictionary(uniqueKeysWithValues: DropReason.allCases.map { reason in (reason, withCounter(reason) { $0.load(ordering: .relaxed) }) }))
    }
}

/// A point-in-time copy of one port's counters. "In" is what the port's guest sent into the switch
/// (accepted frames only), "out" what the switch handed to the guest.
public struct PortStatistics: Sendable, Codable, Equatable {
    public var port: String
    public var mac: String?
    public var framesIn: UInt64
    public var bytesIn: UInt64
    public var framesOut: UInt64
    public var bytesOut: UInt64
    public var drops: [DropReason: UInt64]

    public func drops(_ reason: DropReason) -> UInt64 { drops[reason] ?? 0 }
    public var totalDrops: UInt64 { drops.values.reduce(0, +) }
}

extension [PortStatistics] {
    /// Prometheus text exposition lines (counters) for these ports of switch `name`.
    public func prometheusText(switchName name: String) -> String {
        var lines = [
            "# TYPE streamvm_switch_frames_total counter",
            "# TYPE streamvm_switch_bytes_total counter",
            "# TYPE streamvm_switch_drops_total counter",
        ]
        for stats in self {
            let labels = "switch=\"\(escaped(name))\",port=\"\(escaped(stats.port))\""
            lines.append("streamvm_switch_frames_total{\(labels),direction=\"in\"} \(stats.framesIn)")
            lines.append("streamvm_switch_frames_total{\(labels),direction=\"out\"} \(stats.framesOut)")
            lines.append("streamvm_switch_bytes_total{\(labels),direction=\"in\"} \(stats.bytesIn)")
            lines.append("streamvm_switch_bytes_total{\(labels),direction=\"out\"} \(stats.bytesOut)")
            for reason in DropReason.allCases {
                lines.append("streamvm_switch_drops_total{\(labels),reason=\"\(reason.label)\"} \(stats.drops(reason))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func escaped(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
