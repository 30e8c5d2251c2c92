import CKVM
import Glibc

/// The one place that issues KVM ioctls. Interrupted calls are retried (a signal that only wakes a
/// thread must not fail an ioctl); any other failure becomes a `KVMError` naming the request.
enum IOCTL {
    /// Issues `request` with a pointer argument; returns the non-negative result.
    @discardableResult
    static func call(_ fd: Int32, _ request: UInt, _ name: String, _ argument: UnsafeMutableRawPointer?) throws -> Int32 {
        while true {
            let result = ckvm_ioctl_pointer(fd, request, argument)
            if result >= 0 { return result }
            let error = errno
            if error == EINTR { continue }
            throw KVMError(ioctl: name, errno: error)
        }
    }

    /// Issues `request` with an integer argument; returns the non-negative result.
    @discardableResult
    static func call(_ fd: Int32, _ request: UInt, _ name: String, value: UInt) throws -> Int32 {
        while true {
            let result = ckvm_ioctl_value(fd, request, value)
            if result >= 0 { return result }
            let error = errno
            if error == EINTR { continue }
            throw KVMError(ioctl: name, errno: error)
        }
    }

    /// Issues `request` with a pointer to a typed value.
    @discardableResult
    static func call<T>(_ fd: Int32, _ request: UInt, _ name: String, _ value: inout T) throws -> Int32 {
        try withUnsafeMutableBytes(of: &value) { try call(fd, request, name, $0.baseAddress) }
    }
}
