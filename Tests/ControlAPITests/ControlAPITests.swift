import ControlAPI
import Foundation
import Hypervisor
import Logging
import TestSupport
import Testing

/// The ticker test guest (runs until stopped, checks its memory every round and after a resume)
/// under a real `ControlAPIServer` on a Unix socket: every route, good and bad requests.
@Suite(.enabled(if: KVMSystem.isAvailable, "/dev/kvm is absent or not accessible: control API tests skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct ControlAPITests {
    static let guestImage: Result<[UInt8], any Error> = Result {
        Array(try Data(contentsOf: URL(fileURLWithPath: try TestGuestBuild.build(into: "controlapi") + "/testguest.bin")))
    }

    /// A running ticker guest with its API served at `<directory>/api.sock`.
    final class Running: @unchecked Sendable {
        let directory: TemporaryDirectory
        let machine: Machine
        let server: ControlAPIServer
        let client: UnixHTTPClient

        init(vcpus: Int = 1, restore: RestorePlan? = nil) async throws {
            directory = try TemporaryDirectory("streamvm-api")
            var configuration = MachineConfiguration(memorySize: 64 << 20, vcpuCount: vcpus, image: .flat(try ControlAPITests.guestImage.get()),
                                                     commandLine: "mode=ticker")
            configuration.restore = restore
            machine = try Machine(configuration: configuration, logger: Logger(label: "control-api-test"))
            let socket = directory.sub("api.sock")
            server = ControlAPIServer(socketPath: socket, machine: machine,
                                      info: InstanceInfo(id: "ticker-1", appliance: "testguest-ticker", applianceVersion: "1", memoryMiB: 64),
                                      extraMetrics: { [MetricSample(name: "streamvm_stream_bytes_total", help: "Bytes streamed.", kind: .counter, value: 42)] },
                                      logger: Logger(label: "control-api-test"))
            try await server.start()
            client = UnixHTTPClient(socketPath: socket)
            try machine.start()
        }

        func finish() async {
            machine.stop(.stopRequested)
            _ = machine.waitUntilStopped(timeout: .seconds(30))
            await server.shutdown()
        }

        /// Waits until the guest has printed `count` more "ticker round" lines than it had.
        func waitForRounds(after count: Int, more: Int = 2) -> Bool {
            let deadline = ContinuousClock.now + .seconds(90)
            while ContinuousClock.now < deadline {
                if roundLines >= count + more { return true }
                usleep(20_000)
            }
            return false
        }

        var roundLines: Int { machine.console.output.components(separatedBy: "ticker round").count - 1 }
    }

    @Test func instanceInfoSaysRunningAndTheSocketIsPrivate() async throws {
        let vm = try await Running()
        defer { Task { await vm.finish() } }
        var info = stat()
        #expect(lstat(vm.server.socketPath, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect((info.st_mode & S_IFMT) == S_IFSOCK)
        let reply = try vm.client.send("GET", "/")
        #expect(reply.status == 200)
        #expect(reply.headers["content-type"] == "application/json")
        #expect(reply.json["state"] as? String == "Running")
        #expect(reply.json["id"] as? String == "ticker-1")
        #expect(reply.json["app_name"] as? String == "streamvm")
        #expect(reply.json["vcpus"] as? Int == 1)
        await vm.finish()
        #expect(!FileManager.default.fileExists(atPath: vm.server.socketPath), "the socket is removed at shutdown")
    }

    /// The issue's scenario: pause, snapshot into a copy, resume (the guest goes on), restore the
    /// copy lazily and eagerly (the guest reports its memory intact).
    @Test(arguments: [RestorePlan.MemoryLoading.lazy, .eager])
    func pauseSnapshotResumeThenRestoreTheCopy(loading: RestorePlan.MemoryLoading) async throws {
        let vm = try await Running()
        #expect(vm.waitForRounds(after: 0))
        #expect(try vm.client.send("PATCH", "/vm", body: #"{"state":"Paused"}"#).status == 204)
        #expect(try vm.client.send("GET", "/").json["state"] as? String == "Paused")
        #expect(try vm.client.send("PATCH", "/vm", body: #"{"state":"Paused"}"#).status == 204, "pausing a paused machine is not an error")
        let copy = try TemporaryDirectory("streamvm-api-copy")
        let create = try vm.client.send("PUT", "/snapshot/create",
                                        body: #"{"snapshot_type":"Full","snapshot_path":"\#(copy.sub("vmstate.json"))","mem_file_path":"\#(copy.sub("memory.img"))"}"#)
        #expect(create.status == 204, "\(create.body)")
        let pausedRounds = vm.roundLines
        #expect(try vm.client.send("PATCH", "/vm", body: #"{"state":"Resumed"}"#).status == 204)
        #expect(vm.waitForRounds(after: pausedRounds), "the original goes on after the snapshot")
        await vm.finish()

        let restored = try await Running(restore: try RestorePlan.load(directory: copy.path, loading: loading))
        let deadline = ContinuousClock.now + .seconds(90)
        while !restored.machine.console.output.contains("memory intact"), !restored.machine.console.output.contains("BAD"),
              ContinuousClock.now < deadline {
            usleep(20_000)
        }
        let console = restored.machine.console.output
        await restored.finish()
        #expect(console.contains("memory intact"), "\(console.suffix(400))")
    }

    @Test func aSnapshotOfARunningMachineIsRefusedAndWritesNothing() async throws {
        let vm = try await Running()
        let copy = try TemporaryDirectory("streamvm-api-copy")
        let reply = try vm.client.send("PUT", "/snapshot/create",
                                       body: #"{"snapshot_path":"\#(copy.sub("vmstate.json"))","mem_file_path":"\#(copy.sub("memory.img"))"}"#)
        await vm.finish()
        #expect(reply.status == 400)
        #expect(reply.fault?.contains("pause it") == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: copy.path).isEmpty)
    }

    @Test func badRequestsNameTheFieldOrTheProblem() async throws {
        let vm = try await Running()
        defer { Task { await vm.finish() } }
        let cases: [(method: String, path: String, body: String?, status: Int, fault: String)] = [
            ("PATCH", "/vm", #"{"state":"Sleeping"}"#, 400, #"field state: "Sleeping" is not"#),
            ("PATCH", "/vm", #"{"stat":"Paused"}"#, 400, "field stat: unknown"),
            ("PATCH", "/vm", #"{"state":3}"#, 400, "field state: expected a string"),
            ("PATCH", "/vm", #"{}"#, 400, "missing field state"),
            ("PATCH", "/vm", "not json", 400, "not valid JSON"),
            ("PATCH", "/vm", #"["Paused"]"#, 400, "must be a JSON object"),
            ("PATCH", "/vm", nil, 400, "needs a JSON object body"),
            ("PATCH", "/vm", String(repeating: " ", count: 70_000), 413, "larger than"),
            ("PUT", "/snapshot/create", #"{"snapshot_path":"relative/state","mem_file_path":"/tmp/m"}"#, 400, "field snapshot_path: must be an absolute"),
            ("PUT", "/snapshot/create", #"{"snapshot_path":"/nonexistent-dir/s","mem_file_path":"/tmp/m"}"#, 400, "field snapshot_path: directory /nonexistent-dir does not exist"),
            ("PUT", "/snapshot/create", #"{"snapshot_path":"/tmp/s"}"#, 400, "missing field mem_file_path"),
            ("PUT", "/snapshot/create", #"{"snapshot_path":"/tmp/s","mem_file_path":"/tmp/s"}"#, 400, "name the same file"),
            ("PUT", "/snapshot/create", #"{"snapshot_type":"Diff","snapshot_path":"/tmp/s","mem_file_path":"/tmp/m"}"#, 400, "field snapshot_type"),
            ("GET", "/nothing", nil, 404, "no route GET /nothing"),
            ("DELETE", "/vm", nil, 405, "/vm takes PATCH only"),
            ("POST", "/metrics", nil, 405, "/metrics takes GET only"),
        ]
        for item in cases {
            let reply = try vm.client.send(item.method, item.path, body: item.body)
            #expect(reply.status == item.status, "\(item.method) \(item.path) \(item.body?.prefix(40) ?? "")")
            #expect(reply.fault?.contains(item.fault) == true, "\(item.method) \(item.path): \(reply.body.prefix(200))")
        }
        #expect(try vm.client.send("GET", "/").json["state"] as? String == "Running", "no bad request changed the machine")
    }

    @Test func resumingARunningMachineIsAcceptedAndAStoppedOneRefused() async throws {
        let vm = try await Running()
        #expect(try vm.client.send("PATCH", "/vm", body: #"{"state":"Resumed"}"#).status == 204)
        vm.machine.stop(.stopRequested)
        _ = vm.machine.waitUntilStopped(timeout: .seconds(30))
        let reply = try vm.client.send("PATCH", "/vm", body: #"{"state":"Paused"}"#)
        await vm.finish()
        #expect(reply.status == 400)
        #expect(reply.fault?.contains("stopped") == true)
    }

    @Test func metricsArePrometheusTextWithExitsAndExtraSamples() async throws {
        let vm = try await Running()
        #expect(vm.waitForRounds(after: 0))
        let reply = try vm.client.send("GET", "/metrics")
        await vm.finish()
        #expect(reply.status == 200)
        #expect(reply.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        #expect(reply.body.contains("# TYPE streamvm_vm_exits_total counter"))
        #expect(reply.body.contains(#"streamvm_vm_state{instance="ticker-1",state="Running"} 1"#))
        #expect(reply.body.contains(#"streamvm_stream_bytes_total{instance="ticker-1"} 42"#))
        let portOut = reply.body.split(separator: "\n").first { $0.hasPrefix(#"streamvm_vm_exits_total{instance="ticker-1",reason="portOut"}"#) }
        let count = portOut.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        #expect(count > 0, "the ticker prints through the UART, so it has port-out exits")
    }

    @Test func aLiveSocketOrAForeignFileIsNeverReplacedButAStaleSocketIs() async throws {
        let vm = try await Running()
        defer { Task { await vm.finish() } }
        let second = ControlAPIServer(socketPath: vm.server.socketPath, machine: vm.machine,
                                      info: InstanceInfo(id: "x", appliance: "x", applianceVersion: "1", memoryMiB: 64), logger: Logger(label: "t"))
        await #expect(throws: (any Error).self) { try await second.start() }
        #expect(try vm.client.send("GET", "/").status == 200, "the first server still answers")

        let directory = try TemporaryDirectory("streamvm-api-files")
        let file = directory.sub("not-a-socket")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: file))
        let onFile = ControlAPIServer(socketPath: file, machine: vm.machine,
                                      info: InstanceInfo(id: "x", appliance: "x", applianceVersion: "1", memoryMiB: 64), logger: Logger(label: "t"))
        await #expect(throws: (any Error).self) { try await onFile.start() }
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "keep me")

        // A socket nobody listens on (a crashed VMM's) is replaced.
        let stale = directory.sub("stale.sock")
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in stale.utf8.enumerated() { raw[i] = b } }
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(fd)
        let replacing = ControlAPIServer(socketPath: stale, machine: vm.machine,
                                         info: InstanceInfo(id: "y", appliance: "y", applianceVersion: "1", memoryMiB: 64), logger: Logger(label: "t"))
        try await replacing.start()
        #expect(try UnixHTTPClient(socketPath: stale).send("GET", "/").json["id"] as? String == "y")
        await replacing.shutdown()
    }
}
