import CKVM
import Glibc

/// A userfaultfd(2) file descriptor with guest RAM registered for missing-page faults. It owns the
/// ioctls (API handshake, register, copy, zero-page, wake); `PageFaultHandler` owns the policy.
final class Userfaultfd: @unchecked Sendable {
    let fd: Int32
    let pageSize: Int

    /// Opens a userfaultfd (non-blocking, close-on-exec) and negotiates the API. Tries the
    /// userfaultfd(2) system call first and /dev/userfaultfd (Linux ≥ 6.1) second. Missing faults
    /// on shared memory (a memfd) need UFFD_FEATURE_MISSING_SHMEM; anonymous memory does not.
    init(pageSize: Int, sharedMemory: Bool = true) throws {
        var descriptor = ckvm_userfaultfd(O_CLOEXEC | O_NONBLOCK)
        if descriptor < 0 {
            let callError = errno
            let device = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC)
            if device >= 0 {
                descriptor = ckvm_ioctl_value(device, CUSERFAULTFD_IOC_NEW, UInt(O_CLOEXEC | O_NONBLOCK))
                close(device)
            }
            guard descriptor >= 0 else {
                throw HypervisorError.unsupportedHost("userfaultfd unavailable (\(String(cString: strerror(callError)))); lazy guest memory needs CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1, or access to /dev/userfaultfd")
            }
        }
        fd = descriptor
        self.pageSize = pageSize
        var api = uffdio_api(api: CUFFD_API, features: 0, ioctls: 0)
        guard ckvm_ioctl_pointer(fd, CUFFDIO_API, &api) == 0 else {
            let error = errno
            close(fd)
            throw HypervisorError.system(call: "UFFDIO_API", errno: error)
        }
        guard !sharedMemory || api.features & CUFFD_FEATURE_MISSING_SHMEM != 0 else {
            close(fd)
            throw HypervisorError.unsupportedHost("userfaultfd cannot handle missing faults on shared memory (UFFD_FEATURE_MISSING_SHMEM)")
        }
    }

    deinit { close(fd) }

    /// Registers [start, start+length) for missing-page faults and checks COPY and ZEROPAGE are offered.
    func register(start: UnsafeMutableRawPointer, length: Int) throws {
        var registration = uffdio_register()
        registration.range.start = UInt64(UInt(bitPattern: start))
        registration.range.len = UInt64(length)
        registration.mode = CUFFDIO_REGISTER_MODE_MISSING
        guard ckvm_ioctl_pointer(fd, CUFFDIO_REGISTER, &registration) == 0 else {
            throw HypervisorError.system(call: "UFFDIO_REGISTER", errno: errno)
        }
        // _UFFDIO_COPY = 3, _UFFDIO_ZEROPAGE = 4, _UFFDIO_WAKE = 2 (linux/userfaultfd.h).
        let needed: UInt64 = (1 << 2) | (1 << 3) | (1 << 4)
        guard registration.ioctls & needed == needed else {
            throw HypervisorError.unsupportedHost("userfaultfd range offers ioctls 0x\(String(registration.ioctls, radix: 16)), needs COPY, ZEROPAGE and WAKE")
        }
    }

    /// Outcome of installing a page.
    enum Install: Equatable {
        case installed
        /// Someone else installed the page first (EEXIST): it is there, but waiters may need a wake.
        case alreadyPresent
    }

    /// Atomically maps a copy of `source` (one page) at `address`, waking threads waiting on it.
    func copy(_ source: UnsafeRawPointer, to address: UInt64) throws -> Install {
        var request = uffdio_copy(dst: address, src: UInt64(UInt(bitPattern: source)), len: UInt64(pageSize), mode: 0, copy: 0)
        return try install(CUFFDIO_COPY, "UFFDIO_COPY", address: address, &request)
    }

    /// Maps a zero page at `address`, waking threads waiting on it.
    func zeroPage(at address: UInt64) throws -> Install {
        var request = uffdio_zeropage(range: uffdio_range(start: address, len: UInt64(pageSize)), mode: 0, zeropage: 0)
        return try install(CUFFDIO_ZEROPAGE, "UFFDIO_ZEROPAGE", address: address, &request)
    }

    private func install<T>(_ request: UInt, _ name: String, address: UInt64, _ argument: inout T) throws -> Install {
        while true {
            let result = withUnsafeMutableBytes(of: &argument) { ckvm_ioctl_pointer(fd, request, $0.baseAddress) }
            if result == 0 { return .installed }
            switch errno {
            case EEXIST: return .alreadyPresent
            case EAGAIN, EINTR: continue // the mapping changed under us or a signal arrived: retry
            case let error: throw HypervisorError.system(call: "\(name) at 0x\(String(address, radix: 16))", errno: error)
            }
        }
    }

    /// Wakes threads waiting on the page at `address` (after EEXIST, or a fault on a page already in).
    func wake(_ address: UInt64, length: Int? = nil) {
        var range = uffdio_range(start: address, len: UInt64(length ?? pageSize))
        _ = ckvm_ioctl_pointer(fd, CUFFDIO_WAKE, &range)
    }
}
