import Foundation
import Glibc
import Hypervisor
import HostNetwork
import Testing

/// The tap backend against the kernel's own stack: a tap in a fresh network namespace, patched to
/// a switch uplink port; a guest port answers ARP and ICMP echo (`EchoResponder`), and the
/// kernel's ping in the namespace must get its echoes back intact (ping checks the data).
@Suite(.serialized) struct TapBackendTests {
    static var canCreateTaps: Bool {
        getuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
            && (FileManager.default.isExecutableFile(atPath: "/usr/bin/ping") || FileManager.default.isExecutableFile(atPath: "/bin/ping"))
    }

    @discardableResult
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test(.enabled(if: canCreateTaps, "needs root, /dev/net/tun, ip and ping: tap test skipped"))
    func theKernelPingsAGuestThroughTapAndSwitch() throws {
        let namespace = "svm-test-\(UInt32.random(in: 0...UInt32.max))"
        #expect(try Self.run(["netns", "add", namespace]).status == 0)
        defer { _ = try? Self.run(["netns", "del", namespace]) }

        let tap = try TapBackend(TapBackend.Configuration(interface: "svmtap0", namespace: namespace))
        defer { tap.disconnect() }
        #expect(try Self.run(["-n", namespace, "addr", "add", "10.77.0.1/24", "dev", "svmtap0"]).status == 0)
        #expect(try Self.run(["-n", namespace, "link", "set", "svmtap0", "up"]).status == 0)

        let network = NetworkSwitch(name: "tap-test")
        defer { network.stop() }
        let uplink = try network.addPort(PortConfiguration(name: "uplink", mac: nil, acceptsOffloads: true))
        NetworkPatch.connect(uplink, tap)
        let guestMAC = MACAddress("02:00:00:00:77:02")!
        let guest = try network.addPort(PortConfiguration(name: "guest", mac: guestMAC))
        let responder = EchoResponder(mac: guestMAC, address: [10, 77, 0, 2], port: guest)
        guest.connect(responder)

        let ping = Process()
        ping.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        ping.arguments = ["netns", "exec", namespace, "ping", "-c", "5", "-i", "0.2", "-W", "2", "-s", "1000", "-p", "a5c3", "10.77.0.2"]
        let pipe = Pipe()
        ping.standardOutput = pipe
        ping.standardError = pipe
        try ping.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        ping.waitUntilExit()
        #expect(ping.terminationStatus == 0, "ping: \(output)")
        #expect(output.contains("5 received"), "ping: \(output)")
        #expect(!output.contains("wrong data"), "ping: \(output)")
        #expect(responder.echoes >= 5)
        let stats = network.statistics()
        #expect(stats.allSatisfy { $0.drops(.spoofedSource) == 0 && $0.drops(.badOffload) == 0 })
        #expect(stats.first { $0.port == "guest" }!.framesOut >= 6)  // ARP + 5 echo requests
    }

    @Test func aNamespaceThatDoesNotExistIsNamed() throws {
        #expect(throws: NetworkError.self) { try TapBackend(TapBackend.Configuration(interface: "svmtap9", namespace: "svm-none-\(getpid())")) }
        #expect(throws: NetworkError.self) { try TapBackend(TapBackend.Configuration(interface: "a/b")) }
        #expect(throws: NetworkError.self) { try TapBackend(TapBackend.Configuration(interface: "x", namespace: "../etc")) }
    }
}

/// A tiny IPv4 host on a switch port: answers ARP requests and ICMP echo requests for its address,
/// so the kernel has a real peer to ping.
final class EchoResponder: NetworkEndpoint, @unchecked Sendable {
    private let mac: MACAddress
    private let address: [UInt8]
    private let port: SwitchPort
    private let lock = NSLock()
    private var echoCount = 0

    init(mac: MACAddress, address: [UInt8], port: SwitchPort) {
        self.mac = mac
        self.address = address
        self.port = port
    }

    var echoes: Int { lock.withLock { echoCount } }

    func deliver(_ frame: UnsafeRawBufferPointer, offload: FrameOffload) -> Bool {
        var bytes = Array(frame)
        guard bytes.count >= 42 else { return true }
        if bytes[12] == 0x08, bytes[13] == 0x06, bytes[21] == 1, Array(bytes[38..<42]) == address {  // ARP request for us
            var reply = Array(bytes[6..<12]) + mac.bytes + [0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]
            reply += mac.bytes + address + Array(bytes[22..<28]) + Array(bytes[28..<32])
            _ = reply.withUnsafeBytes { port.transmit($0, offload: .none) }
        } else if bytes[12] == 0x08, bytes[13] == 0x00, bytes[23] == 1, Array(bytes[30..<34]) == address {  // ICMP to us
            let ipLength = Int(bytes[14] & 0x0F) * 4
            let icmp = 14 + ipLength
            guard bytes[icmp] == 8 else { return true }
            if offload.needsChecksum {  // a checksum left for us: not expected from ping, but fill it
                bytes[icmp + 2] = 0; bytes[icmp + 3] = 0
            }
            let peerMAC = Array(bytes[6..<12])
            bytes.replaceSubrange(0..<6, with: peerMAC)
            bytes.replaceSubrange(6..<12, with: mac.bytes)
            let source = Array(bytes[26..<30])
            bytes.replaceSubrange(26..<30, with: address)
            bytes.replaceSubrange(30..<34, with: source)
            bytes[icmp] = 0
            bytes[icmp + 2] = 0; bytes[icmp + 3] = 0
            var sum: UInt32 = 0
            var index = icmp
            while index + 1 < bytes.count { sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1]); index += 2 }
            if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
            while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
            let checksum = ~UInt16(sum)
            bytes[icmp + 2] = UInt8(checksum >> 8); bytes[icmp + 3] = UInt8(checksum & 0xFF)
            lock.withLock { echoCount += 1 }
            _ = bytes.withUnsafeBytes { port.transmit($0, offload: .none) }
        }
        return true
    }
}
