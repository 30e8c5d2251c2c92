import Foundation
import Glibc

/// Copy-on-write over any read-only base backend (a raw image file, or a streamed disk): the guest's
/// writes go to a sparse data file at `path`, as large as the disk; reads come from it for blocks
/// written before and from the base otherwise, so the base (a shared, content-addressed image) is
/// never modified. Which blocks the overlay holds is the block map `<path>.map`. This is the one
/// overlay of the project; its on-disk format is in docs/FORMAT.md ("Disk overlay").
///
/// fsync policy (the contract of a disk with a volatile write cache): `write` puts data in the data
/// file and sets the block's bit in memory only. `flush` (the guest's FLUSH, a snapshot, closing)
/// syncs the data file, then replaces the map atomically. A bit therefore reaches disk only after its
/// data, so after a crash every block reads as the base or as data written before the last
/// completed flush.
public final class CopyOnWriteOverlay: BlockBackend, @unchecked Sendable {
    /// Copy-on-write granularity (the guest page and common filesystem block): a partial write first
    /// copies the rest of its block from the base.
    public static let blockSize: UInt64 = 4096

    public let base: any BlockBackend
    /// The data file; the map is `<path>.map`.
    public let path: String
    /// What the base is (e.g. the published image's digest), recorded in the map so that an overlay
    /// is never reopened over another image; nil: not recorded, not checked.
    public let baseIdentity: String?
    public var size: UInt64 { base.size }
    public let isReadOnly = false
    public var mapPath: String { Self.mapPath(for: path) }
    /// A scratch overlay (a run's writes that nobody keeps): its files are deleted when it closes,
    /// instead of being flushed.
    public let removeOnClose: Bool

    public var snapshotReference: BlockBackendReference {
        BlockBackendReference(kind: "copy-on-write", path: base.snapshotReference.path, overlayPath: path)
    }

    private let fd: Int32
    /// One bit per block, bit `b % 64` of word `b / 64`; `dirty`: differs from the map on disk.
    private let state: Locked<(bitmap: [UInt64], dirty: Bool)>
    /// Orders writes against flushes (a bit must not reach the map before its data is synced).
    private let writeLock = NSLock()

    public static func mapPath(for path: String) -> String { path + ".map" }

    /// Every file an overlay at `path` consists of.
    public static func files(at path: String) -> [String] { [path, mapPath(for: path)] }

    /// Deletes the overlay at `path` (a temporary one, after its run); missing files are fine.
    public static func remove(at path: String) {
        for file in files(at: path) { unlink(file) }
    }

    /// Opens the overlay at `path` over `base`, creating it when it does not exist. Throws
    /// `HypervisorError.invalidOverlay` naming the file when the map or data file is damaged,
    /// truncated, or belongs to another disk; nothing is modified in that case.
    public init(base: any BlockBackend, overlayPath path: String, baseIdentity: String? = nil, removeOnClose: Bool = false) throws {
        self.base = base
        self.path = path
        self.removeOnClose = removeOnClose
        let blockCount = (base.size + Self.blockSize - 1) / Self.blockSize
        let words = Int((blockCount + 63) / 64)
        let mapPath = Self.mapPath(for: path)
        if access(mapPath, F_OK) != 0, access(path + ".json", F_OK) == 0, access(path + ".data", F_OK) == 0 {
            throw HypervisorError.invalidOverlay(path: path + ".data", problem: """
                it is an overlay in the format StreamVM used before (\(path).data, .bitmap, .json), which this version does not \
                read; use another overlay path (the published image is unchanged), or delete those three files to start over
                """)
        }
        let loaded = try OverlayMap.load(from: mapPath, words: words, diskSize: base.size, identity: baseIdentity)
            ?? OverlayMap(bitmap: [UInt64](repeating: 0, count: words), identity: baseIdentity, isCurrentFormat: true)

        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HypervisorError.system(call: "open(\(path))", errno: errno) }
        do {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw HypervisorError.system(call: "fstat(\(path))", errno: errno) }
            let dataSize = UInt64(info.st_size)
            guard dataSize <= base.size else {
                throw HypervisorError.invalidOverlay(path: path, problem: "it is \(dataSize) bytes, larger than the \(base.size)-byte disk: it belongs to another disk")
            }
            if let last = loaded.lastSetBlock, dataSize < min(base.size, (last + 1) * Self.blockSize) {
                throw HypervisorError.invalidOverlay(path: path, problem: """
                    it is truncated (\(dataSize) bytes, but \(mapPath) says block \(last) is written, which ends at byte \(min(base.size, (last + 1) * Self.blockSize)))
                    """)
            }
            // Sparse: extending costs no space and makes every block readable.
            guard ftruncate(fd, off_t(base.size)) == 0 else { throw HypervisorError.system(call: "ftruncate(\(path))", errno: errno) }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
        self.baseIdentity = baseIdentity ?? loaded.identity
        // A map in the earlier header-less layout, or one gaining its identity, is rewritten on the next flush.
        state = Locked((bitmap: loaded.bitmap, dirty: !loaded.isCurrentFormat || (baseIdentity != nil && !loaded.hadIdentity)))
    }

    deinit {
        if removeOnClose { Self.remove(at: path) } else { try? flush() }
        close(fd)
    }

    private func isPresent(_ block: UInt64) -> Bool {
        state.withLock { $0.bitmap[Int(block / 64)] & (1 << (block % 64)) != 0 }
    }

    /// Whether every block of `range` (bytes) is held by the overlay.
    public func covers(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return true }
        return (range.lowerBound / Self.blockSize ... (range.upperBound - 1) / Self.blockSize).allSatisfy(isPresent)
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var position = 0
        while position < buffer.count {
            let absolute = offset + UInt64(position)
            let block = absolute / Self.blockSize
            let inBlock = min(Int(Self.blockSize - absolute % Self.blockSize), buffer.count - position)
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + inBlock)])
            if isPresent(block) {
                let count = try PositionalIO.read(fd, into: piece, at: absolute, path: path)
                guard count == inBlock else { throw HypervisorError.invalidOverlay(path: path, problem: "it ends early, at byte \(absolute + UInt64(count))") }
            } else {
                try base.read(at: absolute, into: piece)
            }
            position += inBlock
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw HypervisorError.ioFailed("write of \(buffer.count) bytes at \(offset) is outside the \(size)-byte disk")
        }
        var position = 0
        while position < buffer.count {
            let absolute = offset + UInt64(position)
            let block = absolute / Self.blockSize
            let blockStart = block * Self.blockSize
            let blockLength = Int(min(Self.blockSize, size - blockStart))
            let inBlock = min(Int(Self.blockSize - absolute % Self.blockSize), buffer.count - position)
            // A partial write to a block still in the base copies the block up first. The base is read
            // outside the lock (a streamed base may wait for the network); another write may copy the
            // block up meanwhile, which the check under the lock sees.
            var copy: [UInt8]?
            if inBlock < blockLength, !isPresent(block) {
                var bytes = [UInt8](repeating: 0, count: blockLength)
                try bytes.withUnsafeMutableBytes { try base.read(at: blockStart, into: $0) }
                copy = bytes
            }
            try writeLock.withLock {
                if let copy, !isPresent(block) {
                    try copy.withUnsafeBytes { try PositionalIO.write(fd, from: $0, at: blockStart, path: path) }
                }
                try PositionalIO.write(fd, from: UnsafeRawBufferPointer(rebasing: buffer[position..<(position + inBlock)]), at: absolute, path: path)
                state.withLock {
                    $0.bitmap[Int(block / 64)] |= 1 << (block % 64)
                    $0.dirty = true
                }
            }
            position += inBlock
        }
    }

    /// Makes completed writes durable: the data file first, then the map that points into it.
    public func flush() throws {
        try writeLock.withLock {
            let (bitmap, dirty) = state.withLock { ($0.bitmap, $0.dirty) }
            guard dirty else { return }
            guard fdatasync(fd) == 0 else { throw HypervisorError.system(call: "fdatasync(\(path))", errno: errno) }
            let map = OverlayMap(bitmap: bitmap, identity: baseIdentity, isCurrentFormat: true)
            try AtomicFile.write(map.encoded(diskSize: size), to: mapPath)
            state.withLock { $0.dirty = false }
        }
    }
}

/// The block map of a `CopyOnWriteOverlay` (`<overlay>.map`), little-endian:
///
///     0   16  magic "streamvm-cowmap\n"
///     16   4  version (1)
///     20   4  block size (4096)
///     24   8  disk size in bytes
///     32   8  FNV-1a 64 of the bitmap bytes
///     40   4  identity length n (at most 1024)
///     44   4  zero
///     48   n  identity of the base (UTF-8; empty: not recorded)
///     48+n    bitmap: ceil(blocks / 64) 64-bit words, block b is bit b % 64 of word b / 64
///
/// Maps written before this header existed are the bare bitmap; they are read (a snapshot may refer
/// to such an overlay) and rewritten with the header on the next flush.
struct OverlayMap {
    static let magic = Array("streamvm-cowmap\n".utf8)
    static let version: UInt32 = 1
    static let headerSize = 48
    static let maximumIdentityLength = 1024

    var bitmap: [UInt64]
    var identity: String?
    /// False for a header-less map of the earlier layout.
    var isCurrentFormat: Bool
    /// Whether the file on disk recorded an identity.
    var hadIdentity = false

    var lastSetBlock: UInt64? {
        guard let word = bitmap.lastIndex(where: { $0 != 0 }) else { return nil }
        return UInt64(word * 64 + 63 - bitmap[word].leadingZeroBitCount)
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    func encoded(diskSize: UInt64) -> Data {
        let identityBytes = Array((identity ?? "").utf8.prefix(Self.maximumIdentityLength))
        var bitmapBytes = Data(capacity: bitmap.count * 8)
        for word in bitmap { withUnsafeBytes(of: word.littleEndian) { bitmapBytes.append(contentsOf: $0) } }
        var data = Data(Self.magic)
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
        append(Self.version)
        append(UInt32(CopyOnWriteOverlay.blockSize))
        append(diskSize)
        append(Self.checksum(bitmapBytes))
        append(UInt32(identityBytes.count))
        append(UInt32(0))
        data.append(contentsOf: identityBytes)
        data.append(bitmapBytes)
        return data
    }

    /// Reads the map at `path`; nil when there is none (a new overlay, or one never flushed).
    static func load(from path: String, words: Int, diskSize: UInt64, identity expected: String?) throws -> OverlayMap? {
        func invalid(_ problem: String) -> HypervisorError { .invalidOverlay(path: path, problem: problem) }
        var info = stat()
        guard stat(path, &info) == 0 else {
            guard errno == ENOENT else { throw HypervisorError.system(call: "stat(\(path))", errno: errno) }
            return nil
        }
        let fileSize = Int(info.st_size)
        let bitmapSize = words * 8
        guard fileSize <= headerSize + maximumIdentityLength + bitmapSize else {
            throw invalid("it is \(fileSize) bytes, more than a map of this \(diskSize)-byte disk can be: it belongs to a larger disk or is damaged")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.system(call: "open(\(path))", errno: errno) }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: fileSize)
        let count = try bytes.withUnsafeMutableBytes { try PositionalIO.read(fd, into: $0, at: 0, path: path) }
        guard count == fileSize else { throw invalid("it shrank while being read") }

        if fileSize == bitmapSize, !bytes.starts(with: magic) {
            return OverlayMap(bitmap: bitmapWords(of: bytes[...]), identity: nil, isCurrentFormat: false)
        }
        guard fileSize >= headerSize else { throw invalid("it is truncated (\(fileSize) bytes, shorter than its \(headerSize)-byte header)") }
        guard bytes.starts(with: magic) else { throw invalid("it is not an overlay block map (no streamvm-cowmap header)") }
        func field<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
            bytes[offset..<(offset + MemoryLayout<T>.size)].reversed().reduce(T(0)) { $0 << 8 | T($1) }
        }
        let version = field(UInt32.self, at: 16)
        guard version == Self.version else { throw invalid("it has format version \(version); this StreamVM reads version \(Self.version)") }
        let blockSize = field(UInt32.self, at: 20)
        guard UInt64(blockSize) == CopyOnWriteOverlay.blockSize else { throw invalid("its block size is \(blockSize), not \(CopyOnWriteOverlay.blockSize)") }
        let recordedSize = field(UInt64.self, at: 24)
        guard recordedSize == diskSize else {
            throw invalid("it belongs to a \(recordedSize)-byte disk, this disk is \(diskSize) bytes")
        }
        let identityLength = Int(field(UInt32.self, at: 40))
        guard identityLength <= maximumIdentityLength, fileSize == headerSize + identityLength + bitmapSize else {
            throw invalid("it is truncated or damaged (\(fileSize) bytes; its header implies \(headerSize + min(identityLength, maximumIdentityLength) + bitmapSize))")
        }
        let bitmapBytes = bytes[(headerSize + identityLength)...]
        guard checksum(bitmapBytes) == field(UInt64.self, at: 32) else { throw invalid("it is damaged (its bitmap does not match its checksum)") }
        let identity = identityLength == 0 ? nil : String(decoding: bytes[headerSize..<(headerSize + identityLength)], as: UTF8.self)
        if let identity, let expected, identity != expected {
            throw invalid("it belongs to another image (\(identity)), not \(expected)")
        }
        return OverlayMap(bitmap: bitmapWords(of: bitmapBytes), identity: identity, isCurrentFormat: true, hadIdentity: identity != nil)
    }

    private static func bitmapWords(of bytes: ArraySlice<UInt8>) -> [UInt64] {
        stride(from: bytes.startIndex, to: bytes.endIndex, by: 8).map { start in
            bytes[start..<(start + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
    }
}
