import Glibc

/// Everything in the Hypervisor module that is not a failed ioctl (`KVMError`); each message says
/// what to check or change.
public enum HypervisorError: Error, CustomStringConvertible, Sendable, Equatable {
    case kvmUnavailable(path: String, errno: Int32)
    case unsupportedHost(String)
    case system(call: String, errno: Int32)
    case invalidConfiguration(String)
    case guestAddressOutOfRange(address: UInt64, length: Int)
    case busRangeOverlap(start: UInt64, length: UInt64)
    case invalidKernel(String)
    case ioFailed(String)
    /// A snapshot (vmstate.json / memory.img) that is damaged, truncated, or from another format version.
    case invalidSnapshot(String)
    /// A copy-on-write overlay's files that are damaged, truncated, or belong to another disk.
    case invalidOverlay(path: String, problem: String)
    /// A lifecycle request the machine's current state does not allow (pause while not running,
    /// snapshot while running, ...).
    case invalidState(String)

    public var description: String {
        switch self {
        case let .kvmUnavailable(path, errno):
            return "cannot open \(path): \(String(cString: strerror(errno))) (is KVM enabled and are you in the kvm group?)"
        case let .unsupportedHost(problem):
            return "this host's KVM is unsuitable: \(problem)"
        case let .system(call, errno):
            return "\(call) failed: \(String(cString: strerror(errno)))"
        case let .invalidConfiguration(problem):
            return "invalid VM configuration: \(problem)"
        case let .guestAddressOutOfRange(address, length):
            return "guest range 0x\(String(address, radix: 16)) + \(length) bytes is not guest RAM"
        case let .busRangeOverlap(start, length):
            return "device window 0x\(String(start, radix: 16)) + \(length) overlaps another device"
        case let .invalidKernel(problem):
            return "cannot load kernel: \(problem)"
        case let .ioFailed(problem):
            return "I/O failed: \(problem)"
        case let .invalidSnapshot(problem):
            return "unusable snapshot: \(problem)"
        case let .invalidOverlay(path, problem):
            return "unusable disk overlay \(path): \(problem)"
        case let .invalidState(problem):
            return "not possible now: \(problem)"
        }
    }
}
