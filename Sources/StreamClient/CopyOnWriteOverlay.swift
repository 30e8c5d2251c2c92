import Catalog
import Foundation

/// The guest's writes to an image, kept beside it so the published image is never modified:
/// `<path>.data` is a sparse file as large as the image holding written 4 KiB blocks, `<path>.bitmap`
/// has one bit per block saying "this block lives in the overlay", `<path>.json` names the image the
/// overlay belongs to (reopening it over another image is refused).
///
/// fsync policy (the contract of a disk with a volatile write cache): `write` puts data in the data
/// file and sets the block's bit in memory only. `flush` (the guest's FLUSH/FUA, or closing the image)
/// fsyncs the data file, then writes and fsyncs the bitmap. A bit therefore reaches disk only after
/// its data, so after a client crash every block reads as the published image, or as data written
/// before the last completed flush; blocks rewritten after that flush may read as either version.
public final class CopyOnWriteOverlay: @unchecked Sendable {
    /// Overlay granularity: the guest page and the common filesystem block size.
    public static let blockSize = 4096

    public let path: String
    public let size: Int
    private let dataFD: Int32
    private let bitmapFD: Int32
    private let lock = NSLock()
    private var bitmap: [UInt8]
    private var dirtyBitmapBytes = IndexSet()
    private var dataDirty = false

    private struct Identity: Codable, Equatable {
        var artifactDigest: Digest
        var size: Int
        var blockSize: Int
    }

    public var blockCount: Int { (size + Self.blockSize - 1) / Self.blockSize }

    /// The files an overlay at `path` consists of.
    public static func files(at path: String) -> [String] { ["\(path).data", "\(path).bitmap", "\(path).json"] }

    /// Deletes the overlay at `path` (a temporary one, after its run); missing files are fine.
    public static func remove(at path: String) {
        for file in files(at: path) { unlink(file) }
    }

    public init(path: String, artifactDigest: Digest, size: Int) throws {
        self.path = path
        self.size = size
        let identity = Identity(artifactDigest: artifactDigest, size: size, blockSize: Self.blockSize)
        let identityPath = "\(path).json"
        if let existing = FileManager.default.contents(atPath: identityPath) {
            guard let decoded = try? JSONDecoder().decode(Identity.self, from: existing), decoded == identity else {
                throw ClientError.overlayMismatch(path: identityPath, problem: "it belongs to another image")
            }
        } else {
            try AtomicFile.write(try JSONEncoder().encode(identity), to: identityPath)
        }
        dataFD = open("\(path).data", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard dataFD >= 0 else { throw ClientError.io(path: "\(path).data", errno: errno) }
        bitmapFD = open("\(path).bitmap", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard bitmapFD >= 0 else {
            close(dataFD)
            throw ClientError.io(path: "\(path).bitmap", errno: errno)
        }
        let bitmapBytes = ((size + Self.blockSize - 1) / Self.blockSize + 7) / 8
        bitmap = [UInt8](repeating: 0, count: bitmapBytes)
        var info = stat()
        fstat(bitmapFD, &info)
        if info.st_size > 0 {
            // A shorter file (a crash while first extending it) means the missing bits were never durable.
            let present = min(Int(info.st_size), bitmapBytes)
            _ = bitmap.withUnsafeMutableBytes { preadFully(bitmapFD, UnsafeMutableRawBufferPointer(rebasing: $0[0..<present]), offset: 0) }
        }
        ftruncate(dataFD, off_t(size))
    }

    deinit {
        try? flush()
        close(dataFD)
        close(bitmapFD)
    }

    private func isSet(_ block: Int) -> Bool { bitmap[block >> 3] & (1 << UInt8(block & 7)) != 0 }

    /// Blocks of `range` held by the overlay.
    public func overlaidBlocks(in range: Range<Int>) -> [Int] {
        guard !range.isEmpty else { return [] }
        lock.lock()
        defer { lock.unlock() }
        return (range.lowerBound / Self.blockSize ... (range.upperBound - 1) / Self.blockSize).filter(isSet)
    }

    /// Whether every byte of `range` comes from the overlay.
    public func covers(_ range: Range<Int>) -> Bool {
        guard !range.isEmpty else { return true }
        lock.lock()
        defer { lock.unlock() }
        return (range.lowerBound / Self.blockSize ... (range.upperBound - 1) / Self.blockSize).allSatisfy(isSet)
    }

    /// Replaces the bytes of `buffer` (which holds `range` of the image) that the overlay holds.
    public func apply(to buffer: inout [UInt8], range: Range<Int>) throws {
        lock.lock()
        defer { lock.unlock() }
        guard !range.isEmpty else { return }
        for block in range.lowerBound / Self.blockSize ... (range.upperBound - 1) / Self.blockSize where isSet(block) {
            let blockStart = block * Self.blockSize
            let lo = max(blockStart, range.lowerBound), hi = min(blockStart + Self.blockSize, range.upperBound)
            let ok = buffer.withUnsafeMutableBytes {
                preadFully(dataFD, UnsafeMutableRawBufferPointer(rebasing: $0[(lo - range.lowerBound)..<(hi - range.lowerBound)]), offset: lo)
            }
            guard ok else { throw ClientError.io(path: "\(path).data", errno: errno == 0 ? EIO : errno) }
        }
    }

    /// Writes `bytes` at `offset`. Partial blocks not yet in the overlay are completed from `base`
    /// (the published content of that whole block), fetched by the caller beforehand.
    public func write(_ bytes: [UInt8], at offset: Int, baseBlocks: [Int: [UInt8]]) throws {
        lock.lock()
        defer { lock.unlock() }
        let end = offset + bytes.count
        guard !bytes.isEmpty else { return }
        for block in offset / Self.blockSize ... (end - 1) / Self.blockSize {
            let blockStart = block * Self.blockSize
            let blockEnd = min(blockStart + Self.blockSize, size)
            let lo = max(blockStart, offset), hi = min(blockEnd, end)
            var content: [UInt8]
            if lo == blockStart && hi == blockEnd {
                content = Array(bytes[(lo - offset)..<(hi - offset)])
            } else {
                if isSet(block) {
                    content = [UInt8](repeating: 0, count: blockEnd - blockStart)
                    let ok = content.withUnsafeMutableBytes { preadFully(dataFD, $0, offset: blockStart) }
                    guard ok else { throw ClientError.io(path: "\(path).data", errno: EIO) }
                } else {
                    guard let base = baseBlocks[block], base.count == blockEnd - blockStart else {
                        throw ClientError.io(path: path, errno: EINVAL)
                    }
                    content = base
                }
                content.replaceSubrange((lo - blockStart)..<(hi - blockStart), with: bytes[(lo - offset)..<(hi - offset)])
            }
            try content.withUnsafeBytes { try pwriteFully(dataFD, $0, offset: blockStart, path: "\(path).data") }
            if !isSet(block) {
                bitmap[block >> 3] |= 1 << UInt8(block & 7)
                dirtyBitmapBytes.insert(block >> 3)
            }
            dataDirty = true
        }
    }

    /// Blocks a write of `count` bytes at `offset` only partly covers and the overlay lacks: the
    /// caller reads their published content before calling `write`.
    public func blocksNeedingBase(offset: Int, count: Int) -> [Int] {
        guard count > 0 else { return [] }
        let end = offset + count
        lock.lock()
        defer { lock.unlock() }
        return [offset / Self.blockSize, (end - 1) / Self.blockSize].reduce(into: [Int]()) { result, block in
            let blockStart = block * Self.blockSize, blockEnd = min(blockStart + Self.blockSize, size)
            let partial = offset > blockStart || end < blockEnd
            if partial, !isSet(block), !result.contains(block) { result.append(block) }
        }
    }

    /// Makes all completed writes durable: data first, then the bitmap that points at it.
    public func flush() throws {
        lock.lock()
        defer { lock.unlock() }
        guard dataDirty || !dirtyBitmapBytes.isEmpty else { return }
        guard fsync(dataFD) == 0 else { throw ClientError.io(path: "\(path).data", errno: errno) }
        for range in dirtyBitmapBytes.rangeView {
            try bitmap[range].withUnsafeBytes { try pwriteFully(bitmapFD, $0, offset: range.lowerBound, path: "\(path).bitmap") }
        }
        guard fsync(bitmapFD) == 0 else { throw ClientError.io(path: "\(path).bitmap", errno: errno) }
        dirtyBitmapBytes.removeAll()
        dataDirty = false
    }
}

func pwriteFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: Int, path: String) throws {
    var done = 0
    while done < buffer.count {
        let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
        if n < 0 {
            if errno == EINTR { continue }
            throw ClientError.io(path: path, errno: errno)
        }
        done += n
    }
}
