import Foundation
import Glibc
import Testing
import TestSupport

/// `streamvm run` with appliance.json `interfaces`: two separate runs joined by taps on a Linux
/// bridge in a network namespace the test makes (how appliances in separate processes meet), the
/// `ip=` a Linux appliance reads, and the refusals that name the field.
@Suite(.enabled(if: HostTools.hasKVM, "/dev/kvm is absent or not accessible: run network tests skipped"), .timeLimit(.minutes(5)), .offCooperativePool)
struct RunNetworkTests {
    static let guest: Result<String, any Error> = Result { try TestGuestBuild.build(into: "runnetwork") + "/testguest.bin" }

    static var canMakeBridges: Bool {
        getuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
    }

    /// An appliance directory for the flat test guest with `commandLine` and `interfaces` (JSON).
    static func appliance(in directory: TemporaryDirectory, name: String, commandLine: String, interfaces: String) throws -> String {
        let path = directory.sub(name)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try guest.get(), toPath: path + "/kernel")
        let json = """
        {"name": "\(name)", "version": "1", "memoryMiB": 64, "vcpus": 1, "kernelFormat": "flat",
         "kernelCommandLine": "\(commandLine)", "readyMarker": "STREAMVM-READY", "interfaces": \(interfaces)}
        """
        try Data(json.utf8).write(to: URL(fileURLWithPath: path + "/appliance.json"))
        return path
    }

    /// The command line the test guest printed on its first console line.
    static func guestCommandLine(_ console: String) -> String? {
        let prefix = "streamvm test guest: "
        return console.split(whereSeparator: \.isNewline).first { $0.hasPrefix(prefix) }
            .map { String($0.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces) }
    }

    @discardableResult
    static func ip(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    @Test(.enabled(if: canMakeBridges, "needs root, /dev/net/tun and ip: bridge test skipped"))
    func twoRunsExchangeFramesThroughTapsOnABridgeWithEveryByteChecked() throws {
        let directory = try TemporaryDirectory("streamvm-runnet")
        let namespace = "svm-run-\(UInt32.random(in: 0...UInt32.max))"
        #expect(try Self.ip(["netns", "add", namespace]) == 0)
        defer { _ = try? Self.ip(["netns", "del", namespace]) }
        // A quiet namespace: no IPv6 (the bridge would send router solicitations and MLD reports the
        // guests would take for their own frames); persistent taps with virtio-net headers on a bridge.
        let setup: [[String]] = [
            ["-n", namespace, "link", "add", "br0", "type", "bridge", "stp_state", "0"],
            ["-n", namespace, "tuntap", "add", "mode", "tap", "name", "tapsend", "vnet_hdr"],
            ["-n", namespace, "tuntap", "add", "mode", "tap", "name", "tapecho", "vnet_hdr"],
            ["-n", namespace, "link", "set", "tapsend", "master", "br0"],
            ["-n", namespace, "link", "set", "tapecho", "master", "br0"],
        ]
        let sysctl = Process()
        sysctl.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        sysctl.arguments = ["netns", "exec", namespace, "sh", "-c",
                            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"]
        try sysctl.run()
        sysctl.waitUntilExit()
        #expect(sysctl.terminationStatus == 0)
        for step in setup { #expect(try Self.ip(step) == 0, "ip \(step.joined(separator: " "))") }
        for link in ["br0", "tapsend", "tapecho"] { #expect(try Self.ip(["-n", namespace, "link", "set", link, "up"]) == 0) }

        let frames = 48
        let echo = try Self.appliance(in: directory, name: "echo", commandLine: "mode=netecho count=\(frames)",
                                      interfaces: #"[{"mac": "02:00:00:00:00:01", "backend": "tap:\#(namespace)/tapecho"}]"#)
        let sender = try Self.appliance(in: directory, name: "sender", commandLine: "mode=net count=\(frames)",
                                        interfaces: #"[{"mac": "52:54:00:12:34:56", "backend": "tap:\#(namespace)/tapsend"}]"#)
        let echoRun = try BackgroundCommand(["run", echo, "--timeout", "200"], logDirectory: directory.path, label: "echo")
        #expect(echoRun.wait(seconds: 60) { echoRun.stdout.contains("net echo: ready") }, "echo: \(echoRun.stdout) \(echoRun.stderr)")
        let sendRun = try BackgroundCommand(["run", sender, "--timeout", "200"], logDirectory: directory.path, label: "sender")

        #expect(sendRun.exitStatus(within: 200) == 0, "sender: \(sendRun.stdout) \(sendRun.stderr)")
        #expect(sendRun.stdout.contains("ok   every frame came back with every byte intact"), "sender: \(sendRun.stdout)")
        #expect(echoRun.exitStatus(within: 60) == 0, "echo: \(echoRun.stdout) \(echoRun.stderr)")
        #expect(echoRun.stdout.contains("ok   every frame echoed"), "echo: \(echoRun.stdout)")
    }

    @Test func theFirstAddressedInterfaceBecomesTheKernelsIPParameter() throws {
        let directory = try TemporaryDirectory("streamvm-runnet-ip")
        let hello = try Self.appliance(in: directory, name: "hello", commandLine: "mode=hello", interfaces: "[]")
        // No interfaces: the command line is left alone.
        let plain = try ConfigCommandTests.run(["run", hello, "--timeout", "60"])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(Self.guestCommandLine(plain.stdout) == "mode=hello", "\(plain.stdout)")

        // A tap in a namespace that does not exist: refused, naming the field.
        let missing = try Self.appliance(in: directory, name: "missing", commandLine: "mode=hello",
                                         interfaces: #"[{"mac": "52:54:00:00:00:02", "backend": "tap:svm-no-such-ns/tap0", "address": "10.9.0.2/24"}]"#)
        let refused = try ConfigCommandTests.run(["run", missing, "--timeout", "60"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("interfaces[0].backend tap:svm-no-such-ns/tap0"), "\(refused.stderr)")

        // switch: in a one-appliance run is refused with the way to connect separate runs.
        let switched = try Self.appliance(in: directory, name: "switched", commandLine: "mode=hello",
                                          interfaces: #"[{"mac": "52:54:00:00:00:03", "backend": "switch:lan"}]"#)
        let refusedSwitch = try ConfigCommandTests.run(["run", switched, "--timeout", "60"])
        #expect(refusedSwitch.status != 0)
        #expect(refusedSwitch.stderr.contains("interfaces[0].backend switch:lan"), "\(refusedSwitch.stderr)")
        #expect(refusedSwitch.stderr.contains("tap:<netns>/<ifname>"), "\(refusedSwitch.stderr)")
    }

    @Test(.enabled(if: canMakeBridges, "needs root, /dev/net/tun and ip: ip= test skipped"))
    func anAddressReachesTheGuestsCommandLine() throws {
        let directory = try TemporaryDirectory("streamvm-runnet-addr")
        let namespace = "svm-ip-\(UInt32.random(in: 0...UInt32.max))"
        #expect(try Self.ip(["netns", "add", namespace]) == 0)
        defer { _ = try? Self.ip(["netns", "del", namespace]) }
        let addressed = try Self.appliance(in: directory, name: "addressed", commandLine: "mode=hello",
                                           interfaces: #"[{"mac": "52:54:00:00:00:04", "backend": "tap:\#(namespace)/tap0", "address": "10.9.0.2/20"}]"#)
        let run = try ConfigCommandTests.run(["run", addressed, "--timeout", "60"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(Self.guestCommandLine(run.stdout) == "mode=hello ip=10.9.0.2:::255.255.240.0::eth0:off", "\(run.stdout)")
    }
}
