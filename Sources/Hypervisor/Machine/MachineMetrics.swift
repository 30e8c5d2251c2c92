/// Where a machine is in its life (Firecracker's `GET /` state names, for the control API).
public enum MachineState: String, Sendable, Codable {
    case notStarted = "Not started"
    case running = "Running"
    case paused = "Paused"
    case stopped = "Stopped"
}

/// The kinds of `VCPUExit`, for counting exits by reason.
public enum VCPUExitKind: String, Sendable, Codable, CaseIterable {
    case portIn, portOut, mmioRead, mmioWrite, halt, shutdown, systemEvent, failedEntry, emulationFailure,
         internalError, interrupted, unhandled

    var index: Int { Self.allCases.firstIndex(of: self)! }
}

extension VCPUExit {
    public var kind: VCPUExitKind {
        switch self {
        case .portIn: return .portIn
        case .portOut: return .portOut
        case .mmioRead: return .mmioRead
        case .mmioWrite: return .mmioWrite
        case .halt: return .halt
        case .shutdown: return .shutdown
        case .systemEvent: return .systemEvent
        case .failedEntry: return .failedEntry
        case .emulationFailure: return .emulationFailure
        case .internalError: return .internalError
        case .interrupted: return .interrupted
        case .unhandled: return .unhandled
        }
    }
}

/// Moments in a machine's life, for benchmarks (`streamvm bench vmm`).
public struct BootTiming: Sendable {
    /// When `Machine.init` began (VMM start).
    public var created: ContinuousClock.Instant
    /// When the boot vCPU first left the guest: the guest has run its first instructions.
    public var firstExit: ContinuousClock.Instant?
    /// When the console first printed the ready marker.
    public var ready: ContinuousClock.Instant?
}

/// A machine's counters at one moment, readable while it runs (`Machine.metrics()`).
public struct MachineMetrics: Sendable, Equatable {
    /// Time since `start` (zero before), paused time included.
    public var uptime: Duration
    public var state: MachineState
    public var vcpuCount: Int
    /// vCPU exits by kind, summed over every vCPU (every kind is present, zero or not).
    public var exits: [VCPUExitKind: UInt64]
    /// Faults the page-fault handler answered from its source: first touches of a lazily
    /// restored page, and touches of pages dropped with `discardPages` (0 without a handler).
    public var pageFaultsServed: Int
    /// Pages the handler has mapped so far, by faults or ahead of them.
    public var pagesInstalled: Int
    /// Per device, in registration order.
    public var devices: [DeviceMetrics]
}

/// Per-vCPU exit counters: each vCPU thread writes only its own, under an uncontended lock (a few
/// nanoseconds beside the microseconds an exit costs).
final class ExitCounters: Sendable {
    private let counts: Locked<[UInt64]>

    init() {
        counts = Locked([UInt64](repeating: 0, count: VCPUExitKind.allCases.count))
    }

    func record(_ kind: VCPUExitKind) {
        counts.withLock { $0[kind.index] += 1 }
    }

    var values: [UInt64] { counts.withLock { $0 } }
}
