/// virtio-blk (virtio 1.x §5.2): one request queue over a `BlockBackend`. Request-level problems
/// (bad header, out-of-range sectors, backend errors) are answered with an error status byte; ring
/// corruption propagates as `VirtqueueError` so the transport resets the device.
public final class VirtioBlock: VirtioDevice, DeviceMetricsSource {
    /// Device ID 2 (§5.2.1).
    public static let blockDeviceType: UInt32 = 2
    public let deviceType: UInt32 = VirtioBlock.blockDeviceType
    public static let queueSize: UInt16 = 256
    public static let sectorSize: UInt64 = 512
    /// Request header: type u32, reserved u32, sector u64 (§5.2.6).
    static let headerSize = 16
    // Request types and status values (§5.2.6).
    static let requestIn: UInt32 = 0
    static let requestOut: UInt32 = 1
    static let requestFlush: UInt32 = 4
    static let requestGetID: UInt32 = 8
    static let statusOK: UInt8 = 0
    static let statusIOError: UInt8 = 1
    static let statusUnsupported: UInt8 = 2
    // Feature bits (§5.2.3).
    static let featureSizeMaximum: UInt64 = 1 << 1
    static let featureSegmentMaximum: UInt64 = 1 << 2
    static let featureReadOnly: UInt64 = 1 << 5
    static let featureFlush: UInt64 = 1 << 9
    /// The ID string for GET_ID is at most 20 bytes (VIRTIO_BLK_ID_BYTES).
    static let identifierLength = 20
    /// Largest data payload one request may move; longer requests get an I/O error instead of tying
    /// up the vCPU thread (Linux sends at most seg_max × PAGE_SIZE).
    static let maximumRequestBytes = 4 << 20
    /// seg_max and size_max offered in configuration space: at most 126 data segments of 32 KiB, so a
    /// driver never builds a request above `maximumRequestBytes`.
    static let segmentMaximum: UInt32 = 126
    static let segmentSizeMaximum: UInt32 = 32 << 10

    public let backend: any BlockBackend
    public let identifier: String
    public let queueMaximumSizes: [UInt16] = [VirtioBlock.queueSize]
    private let requestCounters = Locked(DeviceCounters())

    /// Requests served, bytes read from and written to the backend, requests answered with an error.
    public var counters: DeviceCounters {
        var counters = requestCounters.withLock { $0 }
        counters.throttledSeconds = throttle?.waitedSeconds
        return counters
    }
    public let requestRefusals: GuestErrorCounters? = GuestErrorCounters()
    public var metricsName: String { "virtio-blk" }

    /// Holds the device to a rate and latency (nil: as fast as the backend).
    public let throttle: DiskThrottle?

    public init(backend: any BlockBackend, identifier: String = "streamvm", throttle: DiskThrottle? = nil) {
        self.backend = backend
        self.identifier = identifier
        self.throttle = throttle
    }

    public var features: UInt64 {
        Self.featureFlush | Self.featureSizeMaximum | Self.featureSegmentMaximum | (backend.isReadOnly ? Self.featureReadOnly : 0)
    }

    var capacitySectors: UInt64 { backend.size / Self.sectorSize }

    /// Configuration layout (§5.2.4): capacity u64 at 0, size_max u32 at 8, seg_max u32 at 12.
    var configurationBytes: [UInt8] {
        MPTable.littleEndian(capacitySectors) + MPTable.littleEndian(Self.segmentSizeMaximum) + MPTable.littleEndian(Self.segmentMaximum)
    }

    public func readConfiguration(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        VirtioConfigurationSpace.read(configurationBytes, offset: offset, into: data)
    }

    public func writeConfiguration(offset: Int, from data: UnsafeRawBufferPointer) {}

    public func reset() {}

    public func processQueue(_ index: Int, queue: inout Virtqueue, memory: GuestMemory,
                             completed: (Virtqueue) -> Void) throws(VirtqueueError) {
        while let chain = try queue.popAvailable(from: memory) {
            var diskBytes = 0
            let written = serve(chain, memory: memory) { status, bytesRead, bytesWritten in
                diskBytes = bytesRead + bytesWritten
                requestCounters.withLock {
                    $0.requests += 1
                    $0.bytesRead += UInt64(bytesRead)
                    $0.bytesWritten += UInt64(bytesWritten)
                    if status != Self.statusOK { $0.errors += 1 }
                }
            }
            // The limit delays the completion, never the data: the guest sees the request finish later.
            throttle?.charge(bytes: diskBytes)
            try queue.pushUsed(head: chain.head, length: written, memory: memory)
            completed(queue)
        }
    }

    /// Serves one request; returns how many bytes were written into the driver's buffers. `record`
    /// gets the status and the disk bytes read and written, for the device's counters.
    func serve(_ chain: DescriptorChain, memory: GuestMemory,
               record: (_ status: UInt8, _ bytesRead: Int, _ bytesWritten: Int) -> Void = { _, _, _ in }) -> UInt32 {
        let readable = GuestBuffers(chain.readable, memory: memory)
        var writable = GuestBuffers(chain.writable, memory: memory)
        // The status byte is the last writable byte; without one there is nowhere to report anything.
        guard writable.totalLength >= 1 else {
            requestRefusals?.count("no_status_byte")
            record(Self.statusIOError, 0, 0)
            return 0
        }
        let statusOffset = writable.totalLength - 1
        writable.limit(to: statusOffset)
        var diskBytesWritten = 0
        var type = UInt32.max
        func finish(_ status: UInt8, dataWritten: Int, refused reason: String? = nil) -> UInt32 {
            if let reason { requestRefusals?.count(reason) }
            record(status, type == Self.requestIn && status == Self.statusOK ? dataWritten : 0, diskBytesWritten)
            writable.writeStatus(status, at: statusOffset)
            return UInt32(dataWritten + 1)
        }
        guard readable.totalLength >= Self.headerSize else { return finish(Self.statusIOError, dataWritten: 0, refused: "short_header") }
        let header = readable.copyOut(offset: 0, length: Self.headerSize)
        type = UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24
        let sector = (0..<8).reduce(UInt64(0)) { $0 | UInt64(header[8 + $1]) << (8 * $1) }

        switch type {
        case Self.requestIn, Self.requestOut:
            let length = type == Self.requestIn ? writable.totalLength : readable.totalLength - Self.headerSize
            guard length % Int(Self.sectorSize) == 0, length <= Self.maximumRequestBytes,
                  sector <= capacitySectors, UInt64(length) / Self.sectorSize <= capacitySectors - sector else {
                return finish(Self.statusIOError, dataWritten: 0, refused: "bad_request_range")
            }
            let offset = sector * Self.sectorSize
            do {
                if type == Self.requestIn {
                    try writable.forEachSegment(from: 0, length: length) { diskOffset, piece in
                        try backend.read(at: offset + UInt64(diskOffset), into: piece)
                    }
                    return finish(Self.statusOK, dataWritten: length)
                }
                guard !backend.isReadOnly else { return finish(Self.statusIOError, dataWritten: 0, refused: "write_to_read_only") }
                try readable.forEachSegment(from: Self.headerSize, length: length) { diskOffset, piece in
                    try backend.write(at: offset + UInt64(diskOffset), from: UnsafeRawBufferPointer(piece))
                }
                diskBytesWritten = length
                return finish(Self.statusOK, dataWritten: 0)
            } catch {
                return finish(Self.statusIOError, dataWritten: 0)
            }
        case Self.requestFlush:
            do {
                try backend.flush()
                return finish(Self.statusOK, dataWritten: 0)
            } catch {
                return finish(Self.statusIOError, dataWritten: 0)
            }
        case Self.requestGetID:
            let identifierBytes = Array(identifier.utf8.prefix(Self.identifierLength))
            let count = min(identifierBytes.count, writable.totalLength)
            writable.copyIn(Array(identifierBytes.prefix(count)), at: 0)
            return finish(Self.statusOK, dataWritten: count)
        default:
            return finish(Self.statusUnsupported, dataWritten: 0, refused: "unsupported_request")
        }
    }
}

/// A chain's buffers seen as one byte range, for scatter-gather copies. Every buffer was checked to
/// lie inside guest RAM when the chain was walked.
struct GuestBuffers {
    private var pieces: [UnsafeMutableRawBufferPointer]
    private let statusPieces: [UnsafeMutableRawBufferPointer]
    private(set) var totalLength: Int

    init(_ buffers: [VirtqueueBuffer], memory: GuestMemory) {
        pieces = buffers.compactMap { memory.hostBuffer(at: $0.address, length: Int($0.length)) }
        statusPieces = pieces
        totalLength = pieces.reduce(0) { $0 + $1.count }
    }

    /// Hides everything from `length` on (the status byte) from data copies.
    mutating func limit(to length: Int) {
        totalLength = min(totalLength, length)
    }

    /// Calls `body` for each contiguous host piece covering [start, start+length), with the offset
    /// of that piece relative to `start`.
    func forEachSegment(from start: Int, length: Int, _ body: (Int, UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        var skip = start
        var remaining = min(length, max(totalLength - start, 0))
        var produced = 0
        for piece in pieces where remaining > 0 {
            if skip >= piece.count {
                skip -= piece.count
                continue
            }
            let count = min(piece.count - skip, remaining)
            try body(produced, UnsafeMutableRawBufferPointer(rebasing: piece[skip..<(skip + count)]))
            produced += count
            remaining -= count
            skip = 0
        }
    }

    func copyOut(offset: Int, length: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        forEachSegment(from: offset, length: length) { _, piece in bytes += piece }
        return bytes
    }

    func copyIn(_ bytes: [UInt8], at offset: Int) {
        forEachSegment(from: offset, length: bytes.count) { position, piece in
            for index in 0..<piece.count { piece[index] = bytes[position + index] }
        }
    }

    /// Writes the status byte at `offset`, which lies beyond `limit`.
    func writeStatus(_ status: UInt8, at offset: Int) {
        var skip = offset
        for piece in statusPieces {
            if skip < piece.count {
                piece[skip] = status
                return
            }
            skip -= piece.count
        }
    }
}
