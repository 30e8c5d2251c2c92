import CKVM
import Foundation
import Glibc
import Hypervisor
import Logging
import Synchronization

/// A tap device as a `NetworkBackend`: frames the guest sends are written to the tap, frames the
/// host's kernel sends on it are delivered to the guest. The tap is created in (or attached in) a
/// network namespace the user names, on a short-lived thread that enters the namespace, opens
/// /dev/net/tun and leaves the process's namespaces alone; the user's own tools address and route it.
///
/// With `vnetHeader` every frame carries a virtio-net header, so checksum and segmentation offloads
/// pass through in both directions (the kernel segments what we write; with `offloads` it may hand
/// us large frames with checksums left to fill).
public final class TapBackend: NetworkBackend {
    public struct Configuration: Sendable {
        /// Interface name in the namespace (at most 15 bytes).
        public var interface: String
        /// Network namespace name (as `ip netns` names it, under /var/run/netns); nil for ours.
        public var namespace: String?
        public var vnetHeader: Bool
        /// Let the kernel hand us offload frames (the connected endpoint must take them).
        public var offloads: Bool

        public init(interface: String, namespace: String? = nil, vnetHeader: Bool = true, offloads: Bool = false) {
            self.interface = interface
            self.namespace = namespace
            self.vnetHeader = vnetHeader
            self.offloads = offloads
        }
    }

    static let vnetHeaderLength = 10
    public let configuration: Configuration
    private let fd: Int32
    private let wakeReader: EventFD
    private let endpointBox = Mutex<(any NetworkEndpoint)?>(nil)
    private let stopping = Atomic<Bool>(false)
    private let readerDone = DispatchSemaphore(value: 0)
    private let readerStarted = Atomic<Bool>(false)
    private let logger: Logger
    /// Frames the kernel offered that we could not write: counted like a switch drop.
    public let writeDrops = Atomic<UInt64>(0)

    public init(_ configuration: Configuration, logger: Logger = Logger(label: "streamvm.network.tap")) throws(NetworkError) {
        let name = configuration.interface
        guard !name.isEmpty, name.utf8.count <= 15, !name.contains("/"), !name.contains(where: \.isWhitespace) else {
            throw .invalidConfiguration("tap interface name \"\(name)\" must be 1-15 bytes without / or spaces")
        }
        if let namespace = configuration.namespace {
            guard !namespace.isEmpty, !namespace.contains("/"), namespace != ".", namespace != ".." else {
                throw .invalidConfiguration("network namespace name \"\(namespace)\" is not a name under /var/run/netns")
            }
        }
        self.configuration = configuration
        self.logger = logger
        self.fd = try Self.open(configuration)
        do { wakeReader = try EventFD() } catch {
            Glibc.close(fd)
            throw .system(call: "eventfd", errno: errno)
        }
    }

    deinit {
        disconnect()
        Glibc.close(fd)
    }

    // MARK: Opening the tap

    private static let tunSetInterface: UInt = 0x4004_54CA  // TUNSETIFF
    private static let tunSetOffload: UInt = 0x4004_54D0  // TUNSETOFFLOAD
    private static let interfaceTap: Int16 = 0x0002, noPacketInfo: Int16 = 0x1000, vnetHeaderFlag: Int16 = 0x4000
    private static let offloadChecksum: UInt = 0x01, offloadTSO4: UInt = 0x02, offloadTSO6: UInt = 0x04
    private static let cloneNewNet: Int32 = 0x4000_0000

    /// Opens the tap in the right namespace: on a thread of its own when a namespace is named, so a
    /// failure to switch back can never leave another thread in the wrong namespace.
    private static func open(_ configuration: Configuration) throws(NetworkError) -> Int32 {
        guard let namespace = configuration.namespace else { return try openHere(configuration) }
        let result = Mutex<Result<Int32, NetworkError>>(.failure(.switchStopped))
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let outcome: Result<Int32, NetworkError>
            do throws(NetworkError) { outcome = .success(try openInside(namespace: namespace, configuration)) } catch { outcome = .failure(error) }
            result.withLock { $0 = outcome }
            done.signal()
        }
        thread.start()
        done.wait()
        return try result.withLock { $0 }.get()
    }

    private typealias SetNamespace = @convention(c) (Int32, Int32) -> Int32

    /// setns(2) by symbol: Swift's Glibc module leaves out the GNU-only declaration.
    private static let setNamespace: SetNamespace? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return nil }
        return unsafeBitCast(symbol, to: SetNamespace.self)
    }()

    private static func openInside(namespace: String, _ configuration: Configuration) throws(NetworkError) -> Int32 {
        guard let setns = setNamespace else { throw .system(call: "dlsym(setns)", errno: ENOSYS) }
        let path = "/var/run/netns/\(namespace)"
        let target = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard target >= 0 else { throw .invalidConfiguration("network namespace \(namespace): cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(target) }
        let own = Glibc.open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard own >= 0 else { throw .system(call: "open(/proc/thread-self/ns/net)", errno: errno) }
        defer { Glibc.close(own) }
        guard setns(target, cloneNewNet) == 0 else { throw .system(call: "setns(\(path))", errno: errno) }
        let opened = Result { () throws(NetworkError) -> Int32 in try openHere(configuration) }
        // This thread ends right after; switching back keeps the rule "only this thread moved" honest.
        _ = setns(own, cloneNewNet)
        return try opened.get()
    }

    private static func openHere(_ configuration: Configuration) throws(NetworkError) -> Int32 {
        let fd = Glibc.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw .system(call: "open(/dev/net/tun)", errno: errno) }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { name in
            for (index, byte) in configuration.interface.utf8.enumerated() { name[index] = byte }
        }
        request.ifr_ifru.ifru_flags = interfaceTap | noPacketInfo | (configuration.vnetHeader ? vnetHeaderFlag : 0)
        guard ckvm_ioctl_pointer(fd, tunSetInterface, &request) == 0 else {
            let error = errno
            Glibc.close(fd)
            throw .system(call: "TUNSETIFF(\(configuration.interface))", errno: error)
        }
        if configuration.vnetHeader && configuration.offloads {
            guard ckvm_ioctl_value(fd, tunSetOffload, offloadChecksum | offloadTSO4 | offloadTSO6) == 0 else {
                let error = errno
                Glibc.close(fd)
                throw .system(call: "TUNSETOFFLOAD(\(configuration.interface))", errno: error)
            }
        }
        return fd
    }

    // MARK: NetworkBackend

    public func connect(_ endpoint: any NetworkEndpoint) {
        endpointBox.withLock { $0 = endpoint }
        guard !readerStarted.exchange(true, ordering: .sequentiallyConsistent) else { return }
        let thread = Thread { [self] in
            readLoop()
            readerDone.signal()
        }
        thread.name = "tap \(configuration.interface)"
        thread.start()
    }

    public func transmit(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        guard frame.count >= EthernetFrame.headerLength, frame.count <= EthernetFrame.maximumOffloadLength,
              offload.isConsistent(frameLength: frame.count) else { writeDrops.wrappingAdd(1, ordering: .relaxed); return false }
        var header = [UInt8](repeating: 0, count: Self.vnetHeaderLength)
        if configuration.vnetHeader { Self.encode(offload, into: &header) }
        let written = header.withUnsafeMutableBytes { headerBytes -> Int in
            var vectors = [iovec(iov_base: headerBytes.baseAddress, iov_len: configuration.vnetHeader ? headerBytes.count : 0),
                           iovec(iov_base: UnsafeMutableRawPointer(mutating: frame.baseAddress), iov_len: frame.count)]
            return writev(fd, &vectors, 2)
        }
        if written < 0, errno == EINVAL, offload.needsChecksum, offload.segmentation == .none {
            // The kernel takes a checksum request only where it knows the protocol (IPv4/IPv6 with
            // TCP or UDP); virtio lets a guest ask for any range. Fill it in here and send it whole.
            return transmitWithChecksumDone(frame, offload: offload)
        }
        // A full tap queue (EAGAIN) drops the frame, as a wire would.
        guard written >= 0 else { writeDrops.wrappingAdd(1, ordering: .relaxed); return false }
        return true
    }

    private func transmitWithChecksumDone(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        var complete = Array(frame)
        SoftwareOffload.finishChecksum(&complete, offload: offload)
        return complete.withUnsafeBytes { transmit($0, offload: .none) }
    }

    public func receiveBuffersAvailable() { wakeReader.signal() }

    public func disconnect() {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        wakeReader.signal()
        if readerStarted.load(ordering: .sequentiallyConsistent) { readerDone.wait() }
        endpointBox.withLock { $0 = nil }
    }

    // MARK: Reading

    /// Reads frames from the tap and offers them to the guest. A refused frame is kept and the tap
    /// is not read until the guest posts buffers: the kernel's queue (txqueuelen) holds the rest.
    private func readLoop() {
        var buffer = [UInt8](repeating: 0, count: Self.vnetHeaderLength + EthernetFrame.maximumOffloadLength)
        let skip = configuration.vnetHeader ? Self.vnetHeaderLength : 0
        var held: (length: Int, offload: FrameOffload)?
        while !stopping.load(ordering: .relaxed) {
            if let frame = held {
                let delivered = buffer.withUnsafeBytes { offer(UnsafeRawBufferPointer(rebasing: $0[skip..<(skip + frame.length)]), frame.offload) }
                if delivered { held = nil } else { waitForWake(includingTap: false); continue }
            }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { waitForWake(includingTap: true); continue }
                logger.error("tap read failed", metadata: ["interface": "\(configuration.interface)", "errno": "\(errno)"])
                return
            }
            guard count >= skip + EthernetFrame.headerLength else { continue }
            let offload = configuration.vnetHeader ? buffer.withUnsafeBytes { Self.decode($0) } : .none
            guard offload.isConsistent(frameLength: count - skip) else { continue }
            held = (count - skip, offload)
        }
    }

    private func offer(_ frame: UnsafeRawBufferPointer, _ offload: FrameOffload) -> Bool {
        guard let endpoint = endpointBox.withLock({ $0 }) else { return false }
        return endpoint.deliver(frame, offload: offload)
    }

    private func waitForWake(includingTap: Bool) {
        var descriptors = [pollfd(fd: wakeReader.fd, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: includingTap ? fd : -1, events: Int16(POLLIN), revents: 0)]
        if poll(&descriptors, 2, 1000) > 0, descriptors[0].revents & Int16(POLLIN) != 0 { _ = try? wakeReader.wait() }
    }

    // MARK: virtio-net header (struct virtio_net_hdr, little-endian)

    static func encode(_ offload: FrameOffload, into header: inout [UInt8]) {
        header[0] = offload.needsChecksum ? 1 : 0
        header[1] = offload.segmentation.rawValue
        put16(offload.headerLength, &header, 2)
        put16(offload.segmentSize, &header, 4)
        put16(offload.checksumStart, &header, 6)
        put16(offload.checksumOffset, &header, 8)
    }

    static func decode(_ header: UnsafeRawBufferPointer) -> FrameOffload {
        func get16(_ offset: Int) -> UInt16 { UInt16(header[offset]) | UInt16(header[offset + 1]) << 8 }
        // The ECN bit (0x80) rides on the type; we keep the type only.
        let segmentation = FrameOffload.Segmentation(rawValue: header[1] & 0x7F) ?? .none
        return FrameOffload(needsChecksum: header[0] & 1 != 0, checksumStart: get16(6), checksumOffset: get16(8),
                            segmentation: segmentation, segmentSize: get16(4), headerLength: get16(2))
    }

    private static func put16(_ value: UInt16, _ bytes: inout [UInt8], _ offset: Int) {
        bytes[offset] = UInt8(truncatingIfNeeded: value)
        bytes[offset + 1] = UInt8(value >> 8)
    }
}

/// Connects two backends back to back (e.g. a tap to a switch uplink port): what one delivers,
/// the other transmits. Each side's refusal is the other's drop, as on a wire.
public final class NetworkPatch: NetworkEndpoint {
    private let peer: any NetworkBackend

    private init(peer: any NetworkBackend) { self.peer = peer }

    public func deliver(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        _ = peer.transmit(frame, offload: offload)
        return true
    }

    /// Wires `first` and `second` to each other.
    public static func connect(_ first: any NetworkBackend, _ second: any NetworkBackend) {
        first.connect(NetworkPatch(peer: second))
        second.connect(NetworkPatch(peer: first))
    }
}
