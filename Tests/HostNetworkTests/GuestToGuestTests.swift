import Foundation
import HostNetwork
import Hypervisor
import Logging
import Synchronization
import TestSupport
import Testing

/// Two test guests (two machines, one process) on one host switch: guest A (mode=net) sends frames
/// of 60..1514 bytes to guest B (mode=netecho), which sends each back; A checks every byte and the
/// checksum B's device completed for the frames A left it to the receiver. Nothing on the path is a
/// stand-in: virtio-net on both sides, the learning switch with MAC-bound ports between them.
@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: guest-to-guest test skipped"),
       .timeLimit(.minutes(4)), .offCooperativePool)
struct GuestToGuestTests {
    static let image: Result<[UInt8], any Error> = Result {
        let output = try TestGuestBuild.build(into: "testguest-hostnetwork")
        return Array(try Data(contentsOf: URL(fileURLWithPath: output + "/testguest.bin")))
    }

    /// The guest's MAC and the one mode=net sends to (guest.c net_peer_mac).
    static let senderMAC = try! MACAddress(parsing: "52:54:00:12:34:56")
    static let echoMAC = try! MACAddress(parsing: "02:00:00:00:00:01")

    struct Run: Sendable {
        let reason: StopReason
        let console: String
        let counters: NetworkCounters
    }

    /// Boots one guest on `port` on a thread of its own; the result arrives when its run ends.
    static func boot(_ commandLine: String, mac: MACAddress, port: SwitchPort, label: String) throws -> @Sendable () -> Run {
        let device = VirtioNetDevice(backend: port, mac: mac)
        var configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try image.get()), commandLine: commandLine)
        configuration.devices = [device]
        let machine = try Machine(configuration: configuration, logger: Logger(label: label))
        let result = RunSlot()
        let done = DispatchSemaphore(value: 0)
        let net = device.device
        let thread = Thread {
            let reason = machine.run(timeout: .seconds(150))
            result.run.withLock { $0 = Run(reason: reason, console: machine.console.output, counters: net.networkCounters) }
            done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
        return {
            done.wait()
            return result.run.withLock { $0! }
        }
    }

    @Test func twoGuestsExchangeFramesThroughTheSwitchWithEveryByteChecked() throws {
        let frames = 96
        let network = NetworkSwitch(name: "guests")
        defer { network.stop() }
        let senderPort = try network.addPort(PortConfiguration(name: "sender", mac: Self.senderMAC))
        let echoPort = try network.addPort(PortConfiguration(name: "echo", mac: Self.echoMAC))

        // The echo guest first, so its receive buffers are posted before the first frame (frames
        // that arrive earlier are held by its port's queue, not lost, but this keeps the test plain).
        let echo = try Self.boot("mode=netecho count=\(frames)", mac: Self.echoMAC, port: echoPort, label: "test-net-echo")
        let sender = try Self.boot("mode=net count=\(frames)", mac: Self.senderMAC, port: senderPort, label: "test-net-sender")
        let sent = sender()
        let echoed = echo()

        #expect(sent.reason == .powerOff(code: 0), "sender console: \(sent.console)")
        #expect(sent.console.contains("ok   every frame came back with every byte intact"), "sender console: \(sent.console)")
        #expect(echoed.reason == .powerOff(code: 0), "echo console: \(echoed.console)")
        #expect(echoed.console.contains("ok   every frame echoed"), "echo console: \(echoed.console)")

        // Both devices moved every frame; the switch forwarded every one and dropped none.
        #expect(sent.counters.framesTransmitted == UInt64(frames) && sent.counters.framesReceived == UInt64(frames))
        #expect(echoed.counters.framesTransmitted == UInt64(frames) && echoed.counters.framesReceived == UInt64(frames))
        let statistics = Dictionary(uniqueKeysWithValues: network.statistics().map { ($0.port, $0) })
        for port in ["sender", "echo"] {
            let counted = try #require(statistics[port])
            #expect(counted.totalDrops == 0, "port \(port) drops: \(counted.drops)")
            #expect(counted.framesIn == UInt64(frames) && counted.framesOut == UInt64(frames), "port \(port): \(counted)")
        }
        #expect(statistics["sender"]?.bytesIn == statistics["echo"]?.bytesOut)
    }
}

/// Where a guest's thread leaves its run for the test to collect.
private final class RunSlot: Sendable {
    let run = Mutex<GuestToGuestTests.Run?>(nil)
}
