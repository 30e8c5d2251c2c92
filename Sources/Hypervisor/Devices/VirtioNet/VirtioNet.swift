import Synchronization

/// virtio-net (virtio 1.x §5.1): a receive queue and a transmit queue over a `NetworkBackend`.
///
/// Transmit runs when the guest notifies queue 1: each chain (virtio-net header, then the frame) is
/// gathered into one buffer and handed to `backend.transmit`. Receive runs when a backend thread
/// calls `deliver`: the frame is copied into buffers the guest posted on queue 0 (several, with
/// mergeable receive buffers), through `VirtioMMIOTransport.runDeviceInitiated`, which takes the
/// receive queue's own lock, so a backend may deliver while (or from within) a transmit. A guest
/// notification on queue 0 means new receive buffers: the backend hears it after the run, with no
/// lock held. Ring corruption and buffers in the wrong direction need a reset; a well-formed chain
/// the device cannot use (too large, too short, bad offload fields) is returned unused and counted.
public final class VirtioNet: VirtioDevice, NetworkEndpoint, DeviceMetricsSource, @unchecked Sendable {
    /// Device ID 1 (§5.1.1).
    public static let networkDeviceType: UInt32 = 1
    public let deviceType: UInt32 = VirtioNet.networkDeviceType
    public static let queueSize: UInt16 = 256
    static let receiveQueue = 0
    static let transmitQueue = 1
    /// struct virtio_net_hdr with num_buffers: always this long under VIRTIO_F_VERSION_1 (§5.1.6).
    public static let headerSize = 12
    /// The largest frame either way: a 64 KiB GSO payload plus Ethernet, VLAN and IP headers, as
    /// Linux's virtio-net sizes its largest buffers (65550 bytes).
    public static let maximumFrameSize = 65550
    /// Destination MAC, source MAC, EtherType.
    public static let minimumFrameSize = 14

    /// Feature bits (§5.1.3).
    public enum Feature {
        public static let checksum: UInt64 = 1 << 0
        public static let guestChecksum: UInt64 = 1 << 1
        public static let mac: UInt64 = 1 << 5
        public static let guestTSO4: UInt64 = 1 << 7
        public static let guestTSO6: UInt64 = 1 << 8
        public static let guestUFO: UInt64 = 1 << 10
        public static let hostTSO4: UInt64 = 1 << 11
        public static let hostTSO6: UInt64 = 1 << 12
        public static let hostUFO: UInt64 = 1 << 14
        public static let mergeableReceiveBuffers: UInt64 = 1 << 15
        public static let status: UInt64 = 1 << 16
    }

    /// Header flags and GSO types (§5.1.6).
    static let flagNeedsChecksum: UInt8 = 1
    static let flagDataValid: UInt8 = 2
    static let gsoECN: UInt8 = 0x80
    /// Config status bit VIRTIO_NET_S_LINK_UP (§5.1.4).
    static let linkUp: UInt16 = 1

    public let backend: any NetworkBackend
    public let mac: MACAddress
    public let queueMaximumSizes: [UInt16] = [VirtioNet.queueSize, VirtioNet.queueSize]
    public let requestRefusals: GuestErrorCounters? = GuestErrorCounters()
    public var metricsName: String { "virtio-net" }
    public let features: UInt64 = Feature.mac | Feature.status | Feature.mergeableReceiveBuffers
        | Feature.checksum | Feature.guestChecksum
        | Feature.hostTSO4 | Feature.hostTSO6 | Feature.hostUFO
        | Feature.guestTSO4 | Feature.guestTSO6 | Feature.guestUFO

    /// The driver's accepted features (0 until FEATURES_OK).
    private let negotiated = Atomic<UInt64>(0)
    private let statistics = Mutex(NetworkCounters())
    /// Set once by `attach`; weak: the transport holds this device.
    private let transportReference = Mutex(WeakTransport())
    /// The transmit gather buffer, used only inside a transmit-queue run (which its queue lock
    /// serialises), so it is allocated once, not per frame.
    private var transmitBuffer = [UInt8](repeating: 0, count: VirtioNet.headerSize + VirtioNet.maximumFrameSize)

    public init(backend: any NetworkBackend, mac: MACAddress) {
        self.backend = backend
        self.mac = mac
    }

    /// Frames and bytes each way, and what was dropped or refused.
    public var networkCounters: NetworkCounters { statistics.withLock { $0 } }

    /// For `Machine.metrics()`: requests are frames both ways, bytes read are bytes delivered to the
    /// guest, bytes written are bytes the guest sent, errors are drops and refused chains.
    public var counters: DeviceCounters {
        let counts = networkCounters
        return DeviceCounters(requests: counts.framesTransmitted + counts.framesReceived,
                              bytesRead: counts.bytesReceived, bytesWritten: counts.bytesTransmitted,
                              errors: counts.transmitDropped + counts.receiveDropped + counts.refusedChains)
    }

    /// The driver's negotiated features (0 before FEATURES_OK).
    public var negotiatedFeatures: UInt64 { negotiated.load(ordering: .acquiring) }

    func bind(_ transport: VirtioMMIOTransport) {
        transportReference.withLock { $0.transport = transport }
    }

    // MARK: Configuration and negotiation

    /// Configuration layout (§5.1.4): mac[6] at 0, status u16 at 6, max_virtqueue_pairs u16 at 8.
    var configurationBytes: [UInt8] {
        mac.bytes + [UInt8(Self.linkUp & 0xff), UInt8(Self.linkUp >> 8), 1, 0]
    }

    public func readConfiguration(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        VirtioConfigurationSpace.read(configurationBytes, offset: offset, into: data)
    }

    /// The MAC is the host's to choose (VIRTIO_NET_F_MAC); the guest writes nothing here.
    public func writeConfiguration(offset: Int, from data: UnsafeRawBufferPointer) {}

    public func featuresAccepted(_ features: UInt64) {
        negotiated.store(features, ordering: .releasing)
    }

    public func reset() {
        negotiated.store(0, ordering: .releasing)
    }

    // MARK: Transmit

    public func processQueue(_ index: Int, queue: inout Virtqueue, memory: GuestMemory,
                             completed: (Virtqueue) -> Void) throws(VirtqueueError) {
        // Receive buffers are used when a frame arrives (`deliver`); a notification only says so.
        guard index == Self.transmitQueue else { return }
        while let chain = try queue.popAvailable(from: memory) {
            guard chain.buffers.allSatisfy({ !$0.isDeviceWritable }) else { throw .wrongBufferDirection }
            transmit(chain, memory: memory)
            // Transmit buffers carry nothing back: the used length is 0 (§5.1.6.2).
            try queue.pushUsed(head: chain.head, length: 0, memory: memory)
            completed(queue)
        }
    }

    /// Gathers one chain into `transmitBuffer` and hands the frame to the backend, or refuses it.
    private func transmit(_ chain: DescriptorChain, memory: GuestMemory) {
        // Summed in 64 bits: 256 descriptors of up to 4 GiB each overflow nothing.
        let total = chain.buffers.reduce(UInt64(0)) { $0 + UInt64($1.length) }
        guard total <= UInt64(Self.headerSize + Self.maximumFrameSize) else { return refuse("transmit_frame_too_large") }
        guard total >= UInt64(Self.headerSize + Self.minimumFrameSize) else { return refuse("transmit_frame_too_short") }
        let length = Int(total)
        transmitBuffer.withUnsafeMutableBytes { buffer in
            var position = 0
            for piece in chain.buffers {
                guard let source = memory.hostBuffer(at: piece.address, length: Int(piece.length)) else { return }
                UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + source.count)])
                    .copyMemory(from: UnsafeRawBufferPointer(source))
                position += source.count
            }
            let header = VirtioNetHeader(UnsafeRawBufferPointer(rebasing: buffer[0..<Self.headerSize]))
            let frame = UnsafeRawBufferPointer(rebasing: buffer[Self.headerSize..<length])
            guard let offload = transmitOffload(header, frameLength: frame.count) else { return }
            let accepted = backend.transmit(frame, offload: offload)
            statistics.withLock {
                $0.framesTransmitted += 1
                $0.bytesTransmitted += UInt64(frame.count)
                if !accepted { $0.transmitDropped += 1 }
            }
        }
    }

    /// The offload a transmitted header asks for, if the driver negotiated it and its offsets fit
    /// the frame; nil (the chain is refused and counted) otherwise.
    private func transmitOffload(_ header: VirtioNetHeader, frameLength: Int) -> FrameOffload? {
        let features = negotiatedFeatures
        var offload = FrameOffload.none
        if header.flags & Self.flagNeedsChecksum != 0 {
            guard features & Feature.checksum != 0 else { refuse("checksum_offload_not_negotiated"); return nil }
            guard Int(header.checksumStart) + Int(header.checksumOffset) + 2 <= frameLength else {
                refuse("checksum_offsets_outside_frame"); return nil
            }
            offload.needsChecksum = true
            offload.checksumStart = header.checksumStart
            offload.checksumOffset = header.checksumOffset
        }
        guard header.gsoType != 0 else { return offload }
        guard header.gsoType & Self.gsoECN == 0 else { refuse("segmentation_ecn_not_negotiated"); return nil }
        guard let segmentation = FrameOffload.Segmentation(rawValue: header.gsoType) else { refuse("unknown_segmentation_type"); return nil }
        let required: UInt64 = switch segmentation {
        case .none: 0
        case .tcpIPv4: Feature.hostTSO4
        case .tcpIPv6: Feature.hostTSO6
        case .udp: Feature.hostUFO
        }
        guard features & required != 0 else { refuse("segmentation_not_negotiated"); return nil }
        // Segmentation needs the checksum left open (the segmenter fills it in per segment), a
        // segment size, and headers that lie inside the frame.
        guard offload.needsChecksum, header.gsoSize > 0, Int(header.headerLength) < frameLength else {
            refuse("bad_segmentation_fields"); return nil
        }
        offload.segmentation = segmentation
        offload.segmentSize = header.gsoSize
        offload.headerLength = header.headerLength
        return offload
    }

    private func refuse(_ reason: String) {
        requestRefusals?.count(reason)
        statistics.withLock { $0.refusedChains += 1 }
    }

    public func queueNotified(_ index: Int) {
        if index == Self.receiveQueue { backend.receiveBuffersAvailable() }
    }

    // MARK: Receive

    public func accepts(_ offload: FrameOffload) -> Bool {
        let features = negotiatedFeatures
        if offload.needsChecksum, features & Feature.guestChecksum == 0 { return false }
        switch offload.segmentation {
        case .none: return true
        case .tcpIPv4: return features & Feature.guestTSO4 != 0
        case .tcpIPv6: return features & Feature.guestTSO6 != 0
        case .udp: return features & Feature.guestUFO != 0
        }
    }

    public func deliver(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        guard frame.count >= Self.minimumFrameSize, frame.count <= Self.maximumFrameSize else {
            return drop("receive_frame_size_invalid")
        }
        let features = negotiatedFeatures
        var offload = offload
        if offload.segmentation != .none, !accepts(FrameOffload(segmentation: offload.segmentation)) {
            return drop("receive_segmentation_not_accepted")
        }
        if offload.needsChecksum {
            guard Int(offload.checksumStart) + Int(offload.checksumOffset) + 2 <= frame.count else {
                return drop("receive_checksum_offsets_outside_frame")
            }
            if features & Feature.guestChecksum == 0 {
                // The guest checks checksums itself: fill this one in on a copy.
                var copy = Array(frame)
                _ = copy.withUnsafeMutableBytes {
                    InternetChecksum.complete($0, start: Int(offload.checksumStart), offset: Int(offload.checksumOffset))
                }
                offload.needsChecksum = false
                offload.checksumStart = 0
                offload.checksumOffset = 0
                return copy.withUnsafeBytes { deliverToGuest($0, offload: offload, features: features) }
            }
        }
        return deliverToGuest(frame, offload: offload, features: features)
    }

    private func drop(_ reason: String) -> Bool {
        requestRefusals?.count(reason)
        statistics.withLock { $0.receiveDropped += 1 }
        // Taken (and dropped): offering it again would not help.
        return true
    }

    private enum ReceiveOutcome { case delivered, noBuffers, tooLarge }

    private func deliverToGuest(_ frame: UnsafeRawBufferPointer, offload: FrameOffload, features: UInt64) -> Bool {
        guard let transport = transportReference.withLock({ $0.transport }) else { return false }
        let mergeable = features & Feature.mergeableReceiveBuffers != 0
        let outcome = transport.runDeviceInitiated(queue: Self.receiveQueue) { queue, memory throws(VirtqueueError) in
            let outcome = try Self.fill(&queue, memory: memory, frame: frame, offload: offload, mergeable: mergeable)
            return (outcome, used: outcome == .delivered)
        }
        switch outcome {
        case .delivered:
            statistics.withLock {
                $0.framesReceived += 1
                $0.bytesReceived += UInt64(frame.count)
            }
            return true
        case .tooLarge:
            return drop("receive_frame_larger_than_buffers")
        case .noBuffers, nil:
            statistics.withLock { $0.receiveNoBuffers += 1 }
            return false
        }
    }

    /// Copies header and frame into the next receive chain (or, with mergeable buffers, as many
    /// chains as it takes) and publishes them. Takes nothing when the posted buffers are too few.
    private static func fill(_ queue: inout Virtqueue, memory: GuestMemory, frame: UnsafeRawBufferPointer,
                             offload: FrameOffload, mergeable: Bool) throws(VirtqueueError) -> ReceiveOutcome {
        let needed = headerSize + frame.count
        let untouched = queue
        var chains: [(head: UInt16, pieces: [UnsafeMutableRawBufferPointer])] = []
        var capacity = 0
        while capacity < needed {
            guard mergeable || chains.isEmpty else {
                queue = untouched
                return .tooLarge
            }
            guard chains.count < Int(queue.size), let chain = try queue.popAvailable(from: memory) else {
                queue = untouched
                return chains.count >= Int(queue.size) ? .tooLarge : .noBuffers
            }
            guard chain.buffers.allSatisfy(\.isDeviceWritable) else { throw .wrongBufferDirection }
            let pieces = chain.buffers.compactMap { memory.hostBuffer(at: $0.address, length: Int($0.length)) }
            // A header split across buffers is allowed (§5.1.6.4), but the first chain must at least
            // hold it whole for Linux; require it as QEMU does.
            if chains.isEmpty, pieces.reduce(0, { $0 + $1.count }) < headerSize {
                queue = untouched
                return .tooLarge
            }
            capacity += pieces.reduce(0) { $0 + $1.count }
            chains.append((chain.head, pieces))
        }
        var header = VirtioNetHeader(offload: offload)
        header.numberOfBuffers = UInt16(chains.count)
        let headerBytes = header.bytes
        var source = 0
        for chain in chains {
            var written = 0
            for piece in chain.pieces where source < needed {
                var offset = 0
                while offset < piece.count, source < needed {
                    let count: Int
                    if source < headerSize {
                        count = min(headerSize - source, piece.count - offset)
                        for index in 0..<count { piece[offset + index] = headerBytes[source + index] }
                    } else {
                        count = min(needed - source, piece.count - offset)
                        let from = source - headerSize
                        UnsafeMutableRawBufferPointer(rebasing: piece[offset..<(offset + count)])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: frame[from..<(from + count)]))
                    }
                    offset += count
                    source += count
                    written += count
                }
            }
            try queue.pushUsed(head: chain.head, length: UInt32(written), memory: memory)
        }
        return .delivered
    }
}

/// What a virtio-net device moved and refused since the machine was created.
public struct NetworkCounters: Sendable, Equatable, Codable {
    public var framesTransmitted: UInt64 = 0
    public var bytesTransmitted: UInt64 = 0
    /// Transmitted frames the backend dropped (full queue, rate limit, spoofed source).
    public var transmitDropped: UInt64 = 0
    public var framesReceived: UInt64 = 0
    public var bytesReceived: UInt64 = 0
    /// Frames offered to the guest and dropped (malformed, offload it cannot take, larger than its buffers).
    public var receiveDropped: UInt64 = 0
    /// Offers refused for want of receive buffers (the backend keeps and offers them again).
    public var receiveNoBuffers: UInt64 = 0
    /// Transmit chains refused (returned unused) for their size or header fields.
    public var refusedChains: UInt64 = 0
}

/// struct virtio_net_hdr (§5.1.6): flags u8, gso_type u8, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers (le16 each).
struct VirtioNetHeader {
    var flags: UInt8 = 0
    var gsoType: UInt8 = 0
    var headerLength: UInt16 = 0
    var gsoSize: UInt16 = 0
    var checksumStart: UInt16 = 0
    var checksumOffset: UInt16 = 0
    var numberOfBuffers: UInt16 = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        func word(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
        flags = bytes[0]
        gsoType = bytes[1]
        headerLength = word(2)
        gsoSize = word(4)
        checksumStart = word(6)
        checksumOffset = word(8)
        numberOfBuffers = word(10)
    }

    init(offload: FrameOffload) {
        if offload.needsChecksum {
            flags = VirtioNet.flagNeedsChecksum
            checksumStart = offload.checksumStart
            checksumOffset = offload.checksumOffset
        }
        gsoType = offload.segmentation.rawValue
        if offload.segmentation != .none {
            gsoSize = offload.segmentSize
            headerLength = offload.headerLength
        }
    }

    var bytes: [UInt8] {
        var result = [flags, gsoType]
        for word in [headerLength, gsoSize, checksumStart, checksumOffset, numberOfBuffers] {
            result += [UInt8(word & 0xff), UInt8(word >> 8)]
        }
        return result
    }
}

/// A transport held weakly: the transport owns the device, not the other way round.
private struct WeakTransport {
    weak var transport: VirtioMMIOTransport?
}

/// A virtio-net device for `MachineConfiguration.devices`: attaches the device behind its own
/// virtio-mmio transport under `id`, connects it to its backend, and disconnects the backend when
/// the machine's run ends.
public struct VirtioNetDevice: MachineDevice {
    public let device: VirtioNet
    public let id: String

    public init(backend: any NetworkBackend, mac: MACAddress, id: String = "virtio-net0") {
        device = VirtioNet(backend: backend, mac: mac)
        self.id = id
    }

    public func attach(to devices: DeviceManager) throws {
        let transport = try devices.addVirtioDevice(device, id: id)
        device.bind(transport)
        device.backend.connect(device)
        let backend = device.backend
        devices.onStop { backend.disconnect() }
    }
}
