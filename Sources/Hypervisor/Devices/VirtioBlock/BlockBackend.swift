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
        var done = 0
        while done < buffer.count {
            let count = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw HypervisorError.system(call: "pread", errno: errno) }
            if count == 0 { // past end of file: reads as zeros
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
                return
            }
            done += count
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard !isReadOnly else { throw HypervisorError.ioFailed("write to a read-only disk") }
        var done = 0
        while done < buffer.count {
            let count = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw HypervisorError.system(call: "pwrite", errno: errno) }
            done += count
        }
    }

    public func flush() throws {
        guard !isReadOnly else { return }
        guard fdatasync(fd) == 0 else { throw HypervisorError.system(call: "fdatasync", errno: errno) }
    }
}

/// Copy-on-write over a read-only base: writes go to a sparse overlay file, reads come from the
/// overlay for blocks written before and from the base otherwise. Which blocks the overlay holds is
/// a bitmap kept beside it (`<overlay>.map`), saved on flush, so an overlay survives restarts and the
/// base (a shared, content-addressed image) is never modified.
public final class CopyOnWriteOverlay: BlockBackend {
    /// Copy-on-write granularity: a partial write first copies the rest of its block from the base.
    public static let blockSize: UInt64 = 4096

    public let base: any BlockBackend
    public var size: UInt64 { base.size }
    public let isReadOnly = false
    private let overlay: RawFileBackend
    private let mapPath: String

    public var snapshotReference: BlockBackendReference {
        BlockBackendReference(kind: "copy-on-write", path: base.snapshotReference.path, overlayPath: overlay.path)
    }
    private let present: Locked<[UInt64]>

    public init(base: any BlockBackend, overlayPath: String) throws {
        self.base = base
        let fd = open(overlayPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HypervisorError.system(call: "open(\(overlayPath))", errno: errno) }
        let resized = ftruncate(fd, off_t(base.size)) == 0
        let error = errno
        close(fd)
        guard resized else { throw HypervisorError.system(call: "ftruncate(\(overlayPath))", errno: error) }
        overlay = try RawFileBackend(path: overlayPath, readOnly: false)
        mapPath = overlayPath + ".map"
        let words = Int((base.size + Self.blockSize * 64 - 1) / (Self.blockSize * 64))
        var bitmap = [UInt64](repeating: 0, count: words)
        if let saved = try? RawFileBackend(path: mapPath, readOnly: true), saved.size == UInt64(words * 8) {
            try bitmap.withUnsafeMutableBytes { try saved.read(at: 0, into: $0) }
        }
        present = Locked(bitmap)
    }

    deinit { try? saveMap() }

    func isPresent(_ block: UInt64) -> Bool {
        present.withLock { $0[Int(block / 64)] & (1 << (block % 64)) != 0 }
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var position = 0
        while position < buffer.count {
            let absolute = offset + UInt64(position)
            let block = absolute / Self.blockSize
            let inBlock = min(Int(Self.blockSize - absolute % Self.blockSize), buffer.count - position)
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + inBlock)])
            try (isPresent(block) ? overlay : base).read(at: absolute, into: piece)
            position += inBlock
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        var position = 0
        while position < buffer.count {
            let absolute = offset + UInt64(position)
            let block = absolute / Self.blockSize
            let inBlock = min(Int(Self.blockSize - absolute % Self.blockSize), buffer.count - position)
            if !isPresent(block), inBlock < Int(Self.blockSize) {
                // Partial write to a block still in the base: copy the block up first.
                let start = block * Self.blockSize
                let length = Int(min(Self.blockSize, size - start))
                var copy = [UInt8](repeating: 0, count: length)
                try copy.withUnsafeMutableBytes { try base.read(at: start, into: $0) }
                try copy.withUnsafeBytes { try overlay.write(at: start, from: $0) }
            }
            try overlay.write(at: absolute, from: UnsafeRawBufferPointer(rebasing: buffer[position..<(position + inBlock)]))
            present.withLock { $0[Int(block / 64)] |= 1 << (block % 64) }
            position += inBlock
        }
    }

    public func flush() throws {
        try overlay.flush()
        try saveMap()
    }

    /// Writes the bitmap to a temporary file, syncs it, and renames it over the old one.
    func saveMap() throws {
        let temporary = mapPath + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HypervisorError.system(call: "open(\(temporary))", errno: errno) }
        defer { close(fd) }
        let bitmap = present.withLock { $0 }
        try bitmap.withUnsafeBytes { bytes in
            var done = 0
            while done < bytes.count {
                let count = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { throw HypervisorError.system(call: "write(\(temporary))", errno: errno) }
                done += count
            }
        }
        guard fsync(fd) == 0, rename(temporary, mapPath) == 0 else { throw HypervisorError.system(call: "rename(\(mapPath))", errno: errno) }
    }
}
