import CKVM

/// Why `KVM_RUN` returned, decoded out of the shared `kvm_run` page into plain values so that
/// dispatch (`ExitDispatcher.handle`) can be tested without /dev/kvm.
public enum VCPUExit: Equatable, Sendable {
    /// `in` from an I/O port: the VMM supplies `size * count` bytes.
    case portIn(port: UInt16, size: Int, count: Int)
    /// `out` to an I/O port: `data` holds `count` items of `size` bytes.
    case portOut(port: UInt16, size: Int, data: [UInt8])
    /// A load from guest-physical memory that is not RAM.
    case mmioRead(address: UInt64, length: Int)
    /// A store to guest-physical memory that is not RAM.
    case mmioWrite(address: UInt64, data: [UInt8])
    /// `hlt` with no interrupt pending (only without the in-kernel irqchip, or with interrupts off).
    case halt
    /// Triple fault or INIT from the guest: the machine would reset (KVM_EXIT_SHUTDOWN).
    case shutdown
    /// KVM_EXIT_SYSTEM_EVENT: guest asked for power off (1), reset (2) or reported a crash (3).
    case systemEvent(type: UInt32)
    /// The CPU refused to enter the guest (invalid state); `reason` is the hardware code.
    case failedEntry(reason: UInt64)
    /// KVM could not emulate an instruction; `instruction` holds its bytes when KVM reports them.
    case emulationFailure(instruction: [UInt8])
    /// Another internal KVM error (`suberror` from api.rst, KVM_EXIT_INTERNAL_ERROR).
    case internalError(suberror: UInt32)
    /// KVM_RUN was interrupted by a signal (a kick from another thread): check for stop requests.
    case interrupted
    /// An exit reason this VMM does not handle.
    case unhandled(reason: UInt32)

    /// Reads the exit out of `run` right after KVM_RUN returned 0.
    static func decode(_ run: UnsafeMutablePointer<kvm_run>) -> VCPUExit {
        let reason = ckvm_run_exit_reason(run)
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let size = Int(ckvm_run_io_size(run))
            let count = Int(ckvm_run_io_count(run))
            let port = ckvm_run_io_port(run)
            if ckvm_run_io_direction(run) == UInt8(KVM_EXIT_IO_OUT) {
                let start = UnsafeRawPointer(run) + Int(ckvm_run_io_data_offset(run))
                let data = Array(UnsafeRawBufferPointer(start: start, count: size * count))
                return .portOut(port: port, size: size, data: data)
            }
            return .portIn(port: port, size: size, count: count)
        case KVM_EXIT_MMIO:
            let length = min(Int(ckvm_run_mmio_len(run)), 8) // kvm_run.mmio.data is 8 bytes
            let address = ckvm_run_mmio_phys_addr(run)
            if ckvm_run_mmio_is_write(run) != 0 {
                let data = Array(UnsafeRawBufferPointer(start: ckvm_run_mmio_data(run), count: length))
                return .mmioWrite(address: address, data: data)
            }
            return .mmioRead(address: address, length: length)
        case KVM_EXIT_HLT:
            return .halt
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            return .systemEvent(type: ckvm_run_system_event_type(run))
        case KVM_EXIT_FAIL_ENTRY:
            return .failedEntry(reason: ckvm_run_fail_entry_reason(run))
        case KVM_EXIT_INTERNAL_ERROR:
            let suberror = ckvm_run_internal_suberror(run)
            guard suberror == UInt32(KVM_INTERNAL_ERROR_EMULATION) else { return .internalError(suberror: suberror) }
            var bytes: [UInt8] = []
            if ckvm_run_internal_ndata(run) >= 2,
               ckvm_run_emulation_flags(run) & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 {
                let size = min(Int(ckvm_run_emulation_insn_size(run)), 15)
                bytes = Array(UnsafeBufferPointer(start: ckvm_run_emulation_insn_bytes(run), count: size))
            }
            return .emulationFailure(instruction: bytes)
        case KVM_EXIT_INTR:
            return .interrupted
        default:
            return .unhandled(reason: reason)
        }
    }
}
