import CKVM

/// One CPUID leaf/subleaf as KVM describes it (struct kvm_cpuid_entry2), as a plain value.
public struct CPUIDEntry: Equatable, Sendable {
    public var function: UInt32
    public var index: UInt32
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    init(_ raw: kvm_cpuid_entry2) {
        self.init(function: raw.function, index: raw.index, flags: raw.flags, eax: raw.eax, ebx: raw.ebx, ecx: raw.ecx, edx: raw.edx)
    }

    var kvmValue: kvm_cpuid_entry2 {
        var raw = kvm_cpuid_entry2()
        raw.function = function
        raw.index = index
        raw.flags = flags
        raw.eax = eax
        raw.ebx = ebx
        raw.ecx = ecx
        raw.edx = edx
        return raw
    }
}

/// The CPUID a guest sees: what KVM supports, minus features that some hosts cannot run in a guest.
///
/// Masked, and why (bit numbers from Intel SDM Vol. 2A, CPUID, Tables 3-10/3-11 and leaf 07H):
/// - leaf 1 ECX bit 13 CMPXCHG16B, bit 23 POPCNT: software-nested KVM (PVM, see DESIGN.md) failed to
///   emulate `lock cmpxchg16b` and `popcnt` in guest kernel code; Linux falls back cleanly without them.
/// - leaf 1 ECX bit 26 XSAVE, 27 OSXSAVE, 28 AVX, 12 FMA, 29 F16C; leaf 7 EBX AVX2 (5), AVX-512 (16,17,
///   21,26,27,28,30,31); leaf 7 ECX AVX-512 VBMI etc. (1,6,11,12,14): `xrstor` failed emulation on PVM,
///   and AVX state needs XSAVE. Guests use FXSAVE instead.
/// - leaf 7 EBX bit 20 SMAP: `clac`/`stac` failed emulation on PVM.
/// - leaf 1 ECX bit 5 VMX, leaf 0x80000001 ECX bit 2 SVM: no nested virtualization offered.
/// - leaf 1 ECX bit 3 MONITOR: mwait idle would park vCPUs in a way KVM does not exit for.
/// Set: leaf 1 ECX bit 31 (hypervisor present), the APIC ID of each vCPU in leaf 1 EBX[31:24] and
/// leaf 0xB EDX, and the logical-processor count so the guest's topology matches the vCPU count.
public struct CPUIDPolicy: Sendable {
    static let leaf1ECXMask: UInt32 = ~((1 << 3) | (1 << 5) | (1 << 12) | (1 << 13) | (1 << 23) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29))
    static let leaf1ECXHypervisor: UInt32 = 1 << 31
    static let leaf7EBXMask: UInt32 = ~((1 << 5) | (1 << 16) | (1 << 17) | (1 << 20) | (1 << 21) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 30) | (1 << 31))
    static let leaf7ECXMask: UInt32 = ~((1 << 1) | (1 << 6) | (1 << 11) | (1 << 12) | (1 << 14))
    static let extendedLeaf1ECXMask: UInt32 = ~(1 << 2)
    /// Leaf 0DH describes XSAVE state components; with XSAVE masked it must be empty.
    static let xsaveLeaf: UInt32 = 0xd

    public let vcpuCount: Int

    public init(vcpuCount: Int) {
        self.vcpuCount = vcpuCount
    }

    /// The table for vCPU `apicID`, derived from KVM's supported entries.
    public func entries(from supported: [CPUIDEntry], apicID: Int) -> [CPUIDEntry] {
        supported.compactMap { original in
            var entry = original
            switch entry.function {
            case 1:
                entry.ecx = (entry.ecx & Self.leaf1ECXMask) | Self.leaf1ECXHypervisor
                // EBX[31:24] initial APIC ID, [23:16] logical processors per package, EDX bit 28 HTT.
                entry.ebx = (entry.ebx & 0x0000_ffff) | (UInt32(apicID & 0xff) << 24) | (UInt32(min(vcpuCount, 255)) << 16)
                entry.edx |= vcpuCount > 1 ? (1 << 28) : 0
            case 7 where entry.index == 0:
                entry.ebx &= Self.leaf7EBXMask
                entry.ecx &= Self.leaf7ECXMask
            case Self.xsaveLeaf:
                return nil
            case 0xb:
                entry.edx = UInt32(apicID)
            case 0x8000_0001:
                entry.ecx &= Self.extendedLeaf1ECXMask
            default:
                break
            }
            return entry
        }
    }
}
