import Foundation
import HostNetwork
import Hypervisor
import Logging
import Synchronization

/// Guest↔guest through virtio-net and the host switch: two flat test guests on one switch, mode=net
/// sending frames of 60..1514 bytes one at a time and mode=netecho sending each back. The sender
/// checks every byte of every echo; a frame lost or damaged stops it, and what it did not get back
/// intact is counted as corrupted. Two runs of different lengths, and the difference between them is
/// charged to the extra frames, so guest boot and device set-up are not in the figures.
public struct GuestPingPong {
    public struct Row: Codable, Sendable {
        /// Round trips in the longer run minus the shorter one: what the figures are over.
        public var roundTrips: Int
        public var roundTripMicroseconds: Double
        /// Frames through the switch per second, both directions.
        public var framesPerSecond: Double
        public var megabitsPerSecond: Double
        public var meanFrameBytes: Double
        public var framesCorrupted: UInt64
        public var framesDropped: UInt64
    }

    let image: [UInt8]

    static let senderMAC = try! MACAddress(parsing: "52:54:00:12:34:56")
    static let echoMAC = try! MACAddress(parsing: "02:00:00:00:00:01")

    /// The frame size the test guest uses for sequence `seq` (guest.c net_frame_size).
    static func frameBytes(_ seq: Int) -> Int { 60 + (seq * 397) % (1514 - 60 + 1) }

    /// Who sends each frame back: the second test guest (mode=netecho) or an endpoint on the
    /// switch in this process (guest↔host).
    enum Peer {
        case guest
        case host
    }

    func measure(short: Int, long: Int, peer: Peer) throws -> Row {
        let first = try exchange(frames: short, peer: peer)
        let second = try exchange(frames: long, peer: peer)
        let extra = long - short
        let seconds = max(second.seconds - first.seconds, 1e-9)
        let bytes = (short..<long).reduce(0) { $0 + Self.frameBytes($1) } * 2
        return Row(roundTrips: extra, roundTripMicroseconds: seconds / Double(extra) * 1e6,
                   framesPerSecond: Double(2 * extra) / seconds, megabitsPerSecond: Double(bytes * 8) / seconds / 1e6,
                   meanFrameBytes: Double(bytes) / Double(2 * extra),
                   framesCorrupted: first.corrupted + second.corrupted, framesDropped: first.dropped + second.dropped)
    }

    struct Exchange {
        var seconds: Double
        var corrupted: UInt64
        var dropped: UInt64
    }

    /// One run: the echo guest boots first and reports ready, then the sender runs `frames` round
    /// trips; timed from the sender's start to its power-off.
    private func exchange(frames: Int, peer: Peer) throws -> Exchange {
        let network = NetworkSwitch(name: "bench-guests")
        defer { network.stop() }
        let echoPort = try network.addPort(PortConfiguration(name: "echo", mac: Self.echoMAC))
        let senderPort = try network.addPort(PortConfiguration(name: "sender", mac: Self.senderMAC))
        if case .host = peer {
            echoPort.connect(HostEcho(port: echoPort))
            return try timeSender(frames: frames, port: senderPort, network: network)
        }
        let echo = try machine("mode=netecho count=\(frames)", mac: Self.echoMAC, port: echoPort)
        let echoDone = DispatchSemaphore(value: 0)
        let echoThread = Thread {
            _ = echo.run(timeout: .seconds(600))
            echoDone.signal()
        }
        echoThread.start()
        defer { echo.stop(.stopRequested); echoDone.wait() }
        let readyBy = Date().addingTimeInterval(60)
        while !echo.console.output.contains("net echo: ready") && Date() < readyBy { usleep(1_000) }
        guard echo.console.output.contains("net echo: ready") else {
            throw BenchmarkFailure("echo guest did not set up its device: \(echo.console.output.suffix(400))")
        }
        return try timeSender(frames: frames, port: senderPort, network: network)
    }

    /// Runs the sender guest for `frames` round trips, timed from its start to its power-off.
    private func timeSender(frames: Int, port senderPort: SwitchPort, network: NetworkSwitch) throws -> Exchange {
        let sender = try machine("mode=net count=\(frames)", mac: Self.senderMAC, port: senderPort)
        let start = DispatchTime.now().uptimeNanoseconds
        let reason = sender.run(timeout: .seconds(600))
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let console = sender.console.output
        let intact = console.split(whereSeparator: \.isNewline).first { $0.hasPrefix("net: frames intact 0x") }
            .flatMap { UInt64($0.dropFirst("net: frames intact 0x".count), radix: 16) } ?? 0
        guard reason == .powerOff(code: 0) || intact < UInt64(frames) else {
            throw BenchmarkFailure("sender guest: \(reason): \(console.suffix(400))")
        }
        return Exchange(seconds: seconds, corrupted: UInt64(frames) - min(intact, UInt64(frames)),
                        dropped: network.statistics().reduce(0) { $0 + $1.totalDrops })
    }

    private func machine(_ commandLine: String, mac: MACAddress, port: SwitchPort) throws -> Machine {
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(image), commandLine: commandLine)
        configuration.devices = [VirtioNetDevice(backend: port, mac: mac)]
        return try Machine(configuration: configuration, logger: Logger(label: "bench-net-guest"))
    }
}

/// The host end of a guest↔host round trip: every frame delivered to its port is sent back on the
/// same port with its MACs swapped (the switch completed any checksum the guest left, since this
/// endpoint takes no offloads).
private final class HostEcho: NetworkEndpoint, @unchecked Sendable {
    private let port: SwitchPort
    private var echo = [UInt8](repeating: 0, count: 65_550)

    init(port: SwitchPort) { self.port = port }

    /// Called on the switch thread only, so `echo` needs no lock.
    func deliver(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        guard frame.count >= 14, frame.count <= echo.count else { return true }
        return echo.withUnsafeMutableBytes { buffer in
            buffer.copyMemory(from: frame)
            for index in 0..<6 { buffer.swapAt(index, index + 6) }
            _ = port.transmit(UnsafeRawBufferPointer(rebasing: buffer[0..<frame.count]), offload: .none)
            return true
        }
    }
}
