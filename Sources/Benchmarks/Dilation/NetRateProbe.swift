import Dilation
import Foundation
import HostNetwork
import Hypervisor
import Logging
import Synchronization

/// Perceived network throughput of a pair of test guests on the host switch (`mode=netrate`): the
/// receiver times the sender's frames by its TSC at the frequency it was told, so the figure is in
/// the guests' time. Both guests run under `link.factor` and the sender's port is shaped to the
/// link's real rate and delay: a correct dilation makes the perceived rate the link's perceived
/// rate whatever the factor.
public enum NetRateProbe {
    public struct Result: Sendable {
        public var frames: Int
        public var bytes: Int
        /// From the first to the last frame's arrival, by the receiver's TSC.
        public var perceivedSeconds: Double
        /// Host seconds from the sender's start to the receiver's report.
        public var realSeconds: Double
        /// Bits after the first frame over the perceived time between first and last arrival.
        public var perceivedBitsPerSecond: Double
        public var framesDropped: UInt64
    }

    static let senderMAC = try! MACAddress(parsing: "52:54:00:12:34:56")
    static let receiverMAC = try! MACAddress(parsing: "02:00:00:00:00:01")

    public static func run(guestImage: [UInt8], link: DilatedLink, frames: Int, frameBytes: Int = 1514, logger: Logger) throws -> Result {
        let network = NetworkSwitch(name: "bench-dilation")
        defer { network.stop() }
        let receiverPort = try network.addPort(PortConfiguration(name: "recv", mac: receiverMAC))
        // The sender's queue holds every frame: the device takes them faster than the link sends
        // them, and a tail drop would leave the receiver waiting.
        let senderPort = try network.addPort(PortConfiguration(name: "send", mac: senderMAC, rateBitsPerSecond: link.realBitsPerSecond,
                                                               latencyMilliseconds: link.realDelayMilliseconds, burstBytes: frameBytes,
                                                               queueLimitFrames: frames + 64, queueLimitBytes: (frames + 64) * 2048))
        let timekeeping = try DilatedTimekeeping.onThisHost(factor: link.factor)
        let receiver = try machine(guestImage, "mode=netrate role=recv count=\(frames)", mac: receiverMAC, port: receiverPort,
                                   timekeeping: timekeeping, logger: logger)
        let sender = try machine(guestImage, "mode=netrate role=send count=\(frames) size=\(frameBytes)", mac: senderMAC, port: senderPort,
                                 timekeeping: timekeeping, logger: logger)
        let perceived = Double(frames * frameBytes * 8) / Double(link.perceivedBitsPerSecond ?? 1_000_000_000)
        let limit = Duration.milliseconds(Int((perceived * link.factor.value + 120) * 1000))
        let receiverDone = DispatchSemaphore(value: 0)
        let receiverReason = Mutex<StopReason?>(nil)
        let receiverRun = Thread {
            let reason = receiver.run(timeout: limit)
            receiverReason.withLock { $0 = reason }
            receiverDone.signal()
        }
        receiverRun.start()
        var receiverFinished = false
        defer {
            receiver.stop(.stopRequested)
            if !receiverFinished { receiverDone.wait() }
        }
        let readyBy = Date().addingTimeInterval(60)
        while !receiver.console.output.contains("netrate: ready"), Date() < readyBy { usleep(1_000) }
        guard receiver.console.output.contains("netrate: ready") else {
            throw BenchmarkFailure("netrate receiver did not set up its device: \(receiver.console.output.suffix(400))")
        }
        let start = ContinuousClock.now
        // The sender halts once its frames are in the link and runs until the receiver is done:
        // stopping it would close its port and drop what is still queued there.
        let senderDone = DispatchSemaphore(value: 0)
        let senderReason = Mutex<StopReason?>(nil)
        Thread {
            let reason = sender.run(timeout: limit)
            senderReason.withLock { $0 = reason }
            senderDone.signal()
        }.start()
        defer {
            sender.stop(.stopRequested)
            senderDone.wait()
        }
        receiverFinished = receiverDone.wait(timeout: .now() + .milliseconds(Int(limit.components.seconds) * 1000)) == .success
        if let ended = senderReason.withLock({ $0 }) {
            throw BenchmarkFailure("netrate sender ended early: \(ended): \(sender.console.output.suffix(400))")
        }
        let elapsed = (ContinuousClock.now - start).components
        let words = GuestReportLine.words(receiver.console.output, prefix: "netrate frames ")
        guard words.count == 9, let received = Int(words[2]), let bytes = Int(words[4]), let cycles = Double(words[6]),
              let khz = Double(words[8]), received == frames, received > 1, khz > 0, cycles > 0 else {
            throw BenchmarkFailure("netrate receiver gave no complete report (\(receiverReason.withLock { $0.map { "\($0)" } ?? "still running" }), "
                                   + "switch \(network.prometheusText().split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.hasSuffix(" 0") }.joined(separator: "; "))): \(receiver.console.output.suffix(400))")
        }
        let seconds = cycles / (khz * 1000)
        return Result(frames: received, bytes: bytes, perceivedSeconds: seconds,
                      realSeconds: Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18,
                      perceivedBitsPerSecond: Double(bytes) * Double(received - 1) / Double(received) * 8 / seconds,
                      framesDropped: network.statistics().reduce(0) { $0 + $1.totalDrops })
    }

    private static func machine(_ image: [UInt8], _ commandLine: String, mac: MACAddress, port: SwitchPort,
                                timekeeping: DilatedTimekeeping, logger: Logger) throws -> Machine {
        var configuration = MachineConfiguration(memorySize: 32 << 20, image: .flat(image), commandLine: commandLine)
        configuration.devices = [VirtioNetDevice(backend: port, mac: mac)]
        try timekeeping.apply(to: &configuration)
        return try Machine(configuration: configuration, logger: logger)
    }
}
