import CKVM
import Glibc

/// The `/dev/kvm` file descriptor: API checks, capability queries, and creating VMs.
public final class KVMSystem: @unchecked Sendable {
    /// KVM_GET_API_VERSION must return 12 (Documentation/virt/kvm/api.rst, "KVM_GET_API_VERSION").
    static let expectedAPIVersion: Int32 = 12
    public static let devicePath = "/dev/kvm"

    let fd: Int32
    /// Size of each vCPU's shared `kvm_run` mapping.
    public let vcpuMapSize: Int

    /// Whether this host offers KVM at all (used by tests to skip with a reason).
    public static var isAvailable: Bool { access(devicePath, R_OK | W_OK) == 0 }

    public init(path: String = KVMSystem.devicePath) throws {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.kvmUnavailable(path: path, errno: errno) }
        self.fd = fd
        do {
            let version = try IOCTL.call(fd, CKVM_GET_API_VERSION, "KVM_GET_API_VERSION", value: 0)
            guard version == Self.expectedAPIVersion else {
                throw HypervisorError.unsupportedHost("KVM API version \(version), expected \(Self.expectedAPIVersion)")
            }
            for (capability, name) in [(CKVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"), (CKVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
                                       (CKVM_CAP_PIT2, "KVM_CAP_PIT2")] {
                guard try IOCTL.call(fd, CKVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", value: UInt(capability)) > 0 else {
                    throw HypervisorError.unsupportedHost("missing \(name)")
                }
            }
            vcpuMapSize = Int(try IOCTL.call(fd, CKVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", value: 0))
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Value of KVM_CHECK_EXTENSION for `capability` (0 when absent).
    public func checkExtension(_ capability: Int32) -> Int32 {
        (try? IOCTL.call(fd, CKVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", value: UInt(capability))) ?? 0
    }

    /// The most vCPUs one VM may have on this host.
    public var maximumVCPUs: Int {
        let maximum = checkExtension(CKVM_CAP_MAX_VCPUS)
        return Int(maximum > 0 ? maximum : max(checkExtension(CKVM_CAP_NR_VCPUS), 4))
    }

    /// Entries KVM can expose to a guest (KVM_GET_SUPPORTED_CPUID), before our mask.
    public func supportedCPUID() throws -> [CPUIDEntry] {
        var capacity = 128
        while true {
            let header = MemoryLayout<kvm_cpuid2>.size
            let bytes = header + capacity * MemoryLayout<kvm_cpuid_entry2>.stride
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            let cpuid = buffer.bindMemory(to: kvm_cpuid2.self, capacity: 1)
            cpuid.pointee.nent = UInt32(capacity)
            do {
                try IOCTL.call(fd, CKVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", buffer)
            } catch let error as KVMError where error.errno == E2BIG && capacity < 4096 {
                capacity *= 2
                continue
            }
            let entries = ckvm_cpuid2_entries(cpuid)!
            return (0..<Int(cpuid.pointee.nent)).map { CPUIDEntry(entries[$0]) }
        }
    }

    /// Creates an empty VM (no memory, no vCPUs).
    public func createVirtualMachine() throws -> VirtualMachine {
        let vmFD = try IOCTL.call(fd, CKVM_CREATE_VM, "KVM_CREATE_VM", value: 0)
        return VirtualMachine(fd: vmFD, system: self)
    }

    /// The TSC frequency a new vCPU gets on this host, in kHz: asked of a scratch VM's vCPU,
    /// because KVM answers KVM_GET_TSC_KHZ per vCPU and callers need it before their machine exists.
    public func guestTSCKHz() throws -> Int {
        let scratch = try createVirtualMachine()
        return try scratch.createVCPU(index: 0).tscKHz()
    }
}
