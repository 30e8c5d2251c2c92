import Foundation

/// A failed KVM ioctl, named by request so a user can look it up.
public struct KVMError: Error, CustomStringConvertible, Sendable {
    public let ioctl: String
    public let errno: Int32

    public init(ioctl: String, errno: Int32) {
        self.ioctl = ioctl
        self.errno = errno
    }

    public var description: String { "\(ioctl) failed: \(String(cString: strerror(errno)))" }
}
