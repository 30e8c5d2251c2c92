import Glibc

/// Where a virtio-blk device's bytes live. Offsets and lengths are in bytes; the device only issues
/// requests inside `size`, in whole 512-byte sectors.
public protocol BlockBackend: AnyObject, Sendable {
    /// Capacity in bytes.
    var size: UInt64 { get }
    var isReadOnly: Bool { get }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws
    /// Makes completed writes durable.
    func flush() throws
    /// Where the bytes live, recorded in a snapshot that refers to this disk.
    var snapshotReference: BlockBackendReference { get }
}

extension BlockBackend {
    /// Backends that are not files (a streamed disk) are named by their type.
    public var snapshotReference: BlockBackendReference { BlockBackendReference(kind: String(describing: type(of: self))) }
}

/// A raw disk image file, read with pread and written with pwrite.
public final class RawFileBackend: BlockBackend {
    public let size: UInt64
    public let isReadOnly: Bool
    public let path: String
    let fd: Int32

    public init(path: String, readOnly: Bool) throws {
        let fd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.system(call: "open(\(path))", errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = errno
            close(fd)
            throw HypervisorError.system(call: "fstat(\(path))", errno: error)
        }
        self.fd = fd
        self.path = path
        size = UInt64(info.st_size)
        isReadOnly = readOnly
    }

    public var snapshotReference: BlockBackendReference { BlockBackendReference(kind: "raw-file", path: path) }

    deinit { close(fd) }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let count = try PositionalIO.read(fd, into: buffer, at: offset, path: path)
        // Past the end of the file reads as zeros.
        if count < buffer.count { (buffer.baseAddress! + count).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - count) }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard !isReadOnly else { throw HypervisorError.ioFailed("write to a read-only disk") }
        try PositionalIO.write(fd, from: buffer, at: offset, path: path)
    }

    public func flush() throws {
        guard !isReadOnly else { return }
        guard fdatasync(fd) == 0 else { throw HypervisorError.system(call: "fdatasync", errno: errno) }
    }
}
