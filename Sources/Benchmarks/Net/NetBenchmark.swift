import Foundation
import Glibc
import Hypervisor
import HostNetwork
import Synchronization

/// `streamvm bench net`: the host switch on its own, with frame generators on ports (no guests):
/// forwarding throughput for full and minimum frames, and shaping accuracy (set vs measured rate
/// and one-way delay). Every frame carries a sequence number and a pattern the receiver checks
/// byte by byte (`framesCorrupted`). With the flat test guest's image, also guest↔guest through
/// virtio-net and the switch (`GuestPingPong`).
public struct NetBenchmark {
    public struct Options: Sendable {
        public var quick: Bool
        /// The flat test guest (appliances/testguest/build.sh); nil skips the guest↔guest figures.
        public var guestImage: [UInt8]?
        public init(quick: Bool, guestImage: [UInt8]? = nil) {
            self.quick = quick
            self.guestImage = guestImage
        }
    }

    public struct ThroughputRow: Codable, Sendable {
        public var frameBytes: Int
        public var seconds: Double
        public var framesPerSecond: Double
        public var gigabitsPerSecond: Double
        public var framesDropped: UInt64
    }

    public struct RateRow: Codable, Sendable {
        public var setBitsPerSecond: UInt64
        public var measuredBitsPerSecond: Double
        public var errorPercent: Double
    }

    public struct DelayRow: Codable, Sendable {
        public var setMilliseconds: Double
        public var measuredMeanMilliseconds: Double
        public var measuredP99Milliseconds: Double
        public var errorPercent: Double
        public var probes: Int
    }

    public struct Report: Codable, Sendable {
        public var host: String
        public var load: String
        public var build: String
        public var quick: Bool
        public var throughput: [ThroughputRow]
        public var rate: [RateRow]
        public var delay: [DelayRow]
        public var framesCorrupted: UInt64
        /// Guest↔guest through virtio-net and this switch, one frame in flight (nil: no guest image).
        public var guestToGuest: GuestPingPong.Row?
        /// The same with one guest and an echo on the switch in this process.
        public var guestToHost: GuestPingPong.Row?
        public var maxRateErrorPercent: Double { rate.map(\.errorPercent).max() ?? 0 }
        public var maxDelayErrorPercent: Double { delay.map(\.errorPercent).max() ?? 0 }

        public var table: String {
            var lines = ["bench net (\(build), load \(load)\(quick ? ", quick" : "")): switch alone, generators on ports", "",
                         "| frame bytes | frames/s | Gbit/s | dropped |", "|---|---|---|---|"]
            for row in throughput {
                lines.append("| \(row.frameBytes) | \(Int(row.framesPerSecond)) | \(String(format: "%.3f", row.gigabitsPerSecond)) | \(row.framesDropped) |")
            }
            lines += ["", "| set rate bit/s | measured bit/s | error % |", "|---|---|---|"]
            for row in rate { lines.append("| \(row.setBitsPerSecond) | \(Int(row.measuredBitsPerSecond)) | \(String(format: "%.3f", row.errorPercent)) |") }
            lines += ["", "| set delay ms | mean ms | p99 ms | error % | probes |", "|---|---|---|---|---|"]
            for row in delay {
                lines.append("| \(row.setMilliseconds) | \(String(format: "%.4f", row.measuredMeanMilliseconds)) | \(String(format: "%.4f", row.measuredP99Milliseconds)) | \(String(format: "%.3f", row.errorPercent)) | \(row.probes) |")
            }
            let guestRows = [("guest↔guest", guestToGuest), ("guest↔host", guestToHost)].compactMap { name, row in row.map { (name, $0) } }
            if let first = guestRows.first?.1 {
                lines += ["", "Test guests through virtio-net and this switch, one frame in flight, \(first.roundTrips) round trips of \(Int(first.meanFrameBytes)) B mean:", "",
                          "| path | round trip µs | frames/s | Mbit/s | corrupted | dropped |", "|---|---|---|---|---|---|"]
                for (name, row) in guestRows {
                    lines.append("| \(name) | \(String(format: "%.1f", row.roundTripMicroseconds)) | \(Int(row.framesPerSecond)) | \(String(format: "%.1f", row.megabitsPerSecond)) | \(row.framesCorrupted) | \(row.framesDropped) |")
                }
            }
            lines += ["", "frames_corrupted: \(framesCorrupted)", ""]
            return lines.joined(separator: "\n")
        }
    }

    let options: Options

    public init(options: Options) { self.options = options }

    public func run() throws -> Report {
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        let seconds = options.quick ? 1.0 : 3.0
        var corrupted: UInt64 = 0
        var throughput: [ThroughputRow] = []
        for size in [1514, 64] {
            let (row, bad) = try measureThroughput(frameBytes: size, seconds: seconds)
            throughput.append(row)
            corrupted += bad
        }
        var rates: [RateRow] = []
        for rate: UInt64 in [10_000_000, 100_000_000, 1_000_000_000] {
            let (row, bad) = try measureRate(rate, seconds: seconds)
            rates.append(row)
            corrupted += bad
        }
        var delays: [DelayRow] = []
        for delay in [1.0, 10.0, 50.0] {
            let (row, bad) = try measureDelay(delay, probes: options.quick ? 200 : 1000)
            delays.append(row)
            corrupted += bad
        }
        var guests: GuestPingPong.Row?
        var host: GuestPingPong.Row?
        if let image = options.guestImage {
            let pingPong = GuestPingPong(image: image)
            let long = options.quick ? 2200 : 10200
            guests = try pingPong.measure(short: 200, long: long, peer: .guest)
            host = try pingPong.measure(short: 200, long: long, peer: .host)
            corrupted += (guests?.framesCorrupted ?? 0) + (host?.framesCorrupted ?? 0)
        }
        return Report(host: HostFacts.hostName(), load: HostFacts.loadAverage(), build: build, quick: options.quick,
                      throughput: throughput, rate: rates, delay: delays, framesCorrupted: corrupted, guestToGuest: guests, guestToHost: host)
    }

    static let source = MACAddress("02:00:00:00:be:01")!
    static let destination = MACAddress("02:00:00:00:be:02")!

    /// Two ports, the sender's configured as given; returns the sender and the checking receiver.
    private func pair(_ sender: PortConfiguration) throws -> (NetworkSwitch, SwitchPort, CheckingReceiver) {
        let network = NetworkSwitch(name: "bench")
        let from = try network.addPort(sender)
        let to = try network.addPort(PortConfiguration(name: "rx", mac: Self.destination))
        let receiver = CheckingReceiver()
        from.connect(CheckingReceiver())
        to.connect(receiver)
        // Teach the switch the receiver's MAC so the sender's frames are unicast.
        var hello = BenchFrame.make(to: .broadcast, from: Self.destination, sequence: 0, length: 64)
        _ = hello.withUnsafeMutableBytes { to.transmit(UnsafeRawBufferPointer($0), offload: .none) }
        receiver.reset()
        _ = from
        usleep(10_000)
        return (network, from, receiver)
    }

    /// Sends as fast as the sender's queue takes frames for `seconds`; counts what arrives.
    private func measureThroughput(frameBytes: Int, seconds: Double) throws -> (ThroughputRow, UInt64) {
        let (network, sender, receiver) = try pair(PortConfiguration(name: "tx", mac: Self.source, queueLimitFrames: 4096, queueLimitBytes: 16 << 20))
        defer { network.stop() }
        var frame = BenchFrame.make(to: Self.destination, from: Self.source, sequence: 0, length: frameBytes)
        let start = BenchClock.now()
        let end = start + UInt64(seconds * 1e9)
        var sequence: UInt32 = 1
        var refused: UInt64 = 0
        while BenchClock.now() < end {
            BenchFrame.stamp(&frame, sequence: sequence)
            if frame.withUnsafeBytes({ sender.transmit($0, offload: .none) }) { sequence &+= 1 } else { refused += 1; sched_yield() }
        }
        usleep(100_000)
        let got = receiver.snapshot()
        let elapsed = Double(got.lastArrival - start) / 1e9
        let row = ThroughputRow(frameBytes: frameBytes, seconds: elapsed, framesPerSecond: Double(got.frames) / elapsed,
                                gigabitsPerSecond: Double(got.bytes * 8) / elapsed / 1e9,
                                framesDropped: network.statistics().reduce(0) { $0 + $1.totalDrops })
        return (row, got.corrupted + (UInt64(sequence - 1) - got.frames))
    }

    /// Keeps a rate-limited sender's queue full for `seconds`; the rate is what the receiver saw
    /// between its first and last frame.
    private func measureRate(_ rate: UInt64, seconds: Double) throws -> (RateRow, UInt64) {
        let (network, sender, receiver) = try pair(PortConfiguration(name: "tx", mac: Self.source, rateBitsPerSecond: rate, burstBytes: 1514,
                                                                     queueLimitFrames: 256, queueLimitBytes: 256 * 1514))
        defer { network.stop() }
        var frame = BenchFrame.make(to: Self.destination, from: Self.source, sequence: 0, length: 1514)
        let end = BenchClock.now() + UInt64(seconds * 1e9)
        var sequence: UInt32 = 1
        while BenchClock.now() < end {
            BenchFrame.stamp(&frame, sequence: sequence)
            if frame.withUnsafeBytes({ sender.transmit($0, offload: .none) }) { sequence &+= 1 } else { usleep(200) }
        }
        // Let the queue drain, then measure over the frames that arrived.
        let expected = UInt64(sequence - 1)
        let deadline = BenchClock.now() + 5_000_000_000
        while receiver.snapshot().frames < expected && BenchClock.now() < deadline { usleep(1_000) }
        let got = receiver.snapshot()
        let measured = Double((got.bytes - 1514) * 8) / (Double(got.lastArrival - got.firstArrival) / 1e9)
        return (RateRow(setBitsPerSecond: rate, measuredBitsPerSecond: measured, errorPercent: abs(measured - Double(rate)) / Double(rate) * 100),
                got.corrupted + (expected - got.frames))
    }

    /// Sends probes 2 ms apart through a port with `delay` ms latency and no rate limit; each
    /// probe carries its send time, the receiver takes the difference.
    private func measureDelay(_ delay: Double, probes: Int) throws -> (DelayRow, UInt64) {
        let (network, sender, receiver) = try pair(PortConfiguration(name: "tx", mac: Self.source, latencyMilliseconds: delay))
        defer { network.stop() }
        var frame = BenchFrame.make(to: Self.destination, from: Self.source, sequence: 0, length: 128)
        for index in 1...probes {
            BenchFrame.stamp(&frame, sequence: UInt32(index), sentAt: BenchClock.now())
            _ = frame.withUnsafeBytes { sender.transmit($0, offload: .none) }
            usleep(2_000)
        }
        let deadline = BenchClock.now() + UInt64(delay * 1e6) + 2_000_000_000
        while receiver.snapshot().frames < UInt64(probes) && BenchClock.now() < deadline { usleep(1_000) }
        let got = receiver.snapshot()
        let delays = got.delays.map { $0 / 1e6 }
        let mean = delays.reduce(0, +) / Double(max(delays.count, 1))
        return (DelayRow(setMilliseconds: delay, measuredMeanMilliseconds: mean, measuredP99Milliseconds: Statistics.percentile(delays, 0.99) ?? 0,
                         errorPercent: abs(mean - delay) / delay * 100, probes: delays.count),
                got.corrupted + UInt64(probes) - got.frames)
    }
}

enum BenchClock {
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// Bench frames: header, sequence (4 bytes), send time (8 bytes), then a pattern of the sequence.
enum BenchFrame {
    static func make(to destination: MACAddress, from source: MACAddress, sequence: UInt32, length: Int) -> [UInt8] {
        var frame = destination.bytes + source.bytes + [0x88, 0xB5] + [UInt8](repeating: 0, count: max(length, 60) - 14)
        stamp(&frame, sequence: sequence)
        return frame
    }

    /// Writes the sequence, send time and the pattern for that sequence.
    static func stamp(_ frame: inout [UInt8], sequence: UInt32, sentAt: UInt64 = 0) {
        frame.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: sequence.bigEndian, toByteOffset: 14, as: UInt32.self)
            bytes.storeBytes(of: sentAt.littleEndian, toByteOffset: 18, as: UInt64.self)
            let seed = UInt8(truncatingIfNeeded: sequence)
            for index in 26..<bytes.count { bytes[index] = seed &+ UInt8(truncatingIfNeeded: index) }
        }
    }

    static func isIntact(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard frame.count >= 26 else { return false }
        let seed = frame[17]
        for index in 26..<frame.count where frame[index] != seed &+ UInt8(truncatingIfNeeded: index) { return false }
        return true
    }
}

/// Receives bench frames: checks every byte, counts, keeps first/last arrival and probe delays.
final class CheckingReceiver: NetworkEndpoint {
    struct Snapshot {
        var frames: UInt64 = 0
        var bytes: UInt64 = 0
        var corrupted: UInt64 = 0
        var firstArrival: UInt64 = 0
        var lastArrival: UInt64 = 0
        var delays: [Double] = []
    }

    private let state = Mutex(Snapshot())

    func deliver(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        let now = BenchClock.now()
        let intact = BenchFrame.isIntact(frame)
        let sentAt = frame.count >= 26 ? UInt64(littleEndian: frame.loadUnaligned(fromByteOffset: 18, as: UInt64.self)) : 0
        state.withLock { state in
            if state.frames == 0 { state.firstArrival = now }
            state.frames += 1
            state.bytes += UInt64(frame.count)
            state.lastArrival = now
            if !intact { state.corrupted += 1 }
            if sentAt != 0 { state.delays.append(Double(now - sentAt)) }
        }
        return true
    }

    func reset() { state.withLock { $0 = Snapshot() } }
    func snapshot() -> Snapshot { state.withLock { $0 } }
}
