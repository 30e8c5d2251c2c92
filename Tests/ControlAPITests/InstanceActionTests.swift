import ControlAPI
import Foundation
import Hypervisor
import Testing

/// `PUT /actions {"action_type":"InstanceStop"}` (what `streamvm stop NAME` sends) ends the run as
/// SIGTERM does, running or paused; bad bodies name the field. Also the CLI's own client
/// (`ControlAPIClient`) against the real server.
extension ControlAPITests {
    /// The CLI's 5 s suits an operator's `ps`; a full parallel test run on two cores has kept this
    /// server from answering that soon (seen in CI), and the test is about answers, not speed.
    static let clientTimeoutSeconds = 60

    @Test func instanceStopEndsARunningOrPausedMachine() async throws {
        for pauseFirst in [false, true] {
            let vm = try await Running()
            #expect(vm.waitForRounds(after: 0))
            let client = ControlAPIClient(socketPath: vm.server.socketPath, timeoutSeconds: Self.clientTimeoutSeconds)
            if pauseFirst { #expect(try client.send("PATCH", "/vm", json: #"{"state":"Paused"}"#).status == 204) }
            #expect(try client.send("GET", "/").json["state"] as? String == (pauseFirst ? "Paused" : "Running"))
            #expect(try client.send("PUT", "/actions", json: #"{"action_type":"InstanceStop"}"#).status == 204)
            #expect(vm.machine.waitUntilStopped(timeout: .seconds(30)) == .stopRequested)
            await vm.finish()
            #expect(!client.accepts(), "the socket is removed after shutdown")
        }
    }

    @Test func badActionsNameTheField() async throws {
        let vm = try await Running()
        defer { Task { await vm.finish() } }
        let client = ControlAPIClient(socketPath: vm.server.socketPath, timeoutSeconds: Self.clientTimeoutSeconds)
        for (body, fault) in [(#"{"action_type":"SendCtrlAltDel"}"#, #"field action_type: "SendCtrlAltDel" is not supported"#),
                              (#"{"action":"InstanceStop"}"#, "field action: unknown"),
                              ("{}", "missing field action_type")] {
            let reply = try client.send("PUT", "/actions", json: body)
            #expect(reply.status == 400, "\(body)")
            #expect(reply.fault?.contains(fault) == true, "\(body): \(String(decoding: reply.body, as: UTF8.self))")
        }
        #expect(try client.send("GET", "/actions").status == 405)
        #expect(try client.send("GET", "/").json["state"] as? String == "Running", "no bad action stopped the machine")
    }
}
