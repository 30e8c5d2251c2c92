import Foundation
import Testing
import TestSupport

/// The host view through the built binary: two ticker guests run on KVM with `--name`, `ps` lists
/// both, `pause`/`resume`/`stop` drive them by name, and an entry whose VMM died is shown as stale
/// and pruned.
@Suite(.enabled(if: HostTools.hasKVM, "/dev/kvm is absent or not accessible: host view tests skipped"), .timeLimit(.minutes(5)), .offCooperativePool)
struct HostViewCommandTests {
    static let ticker: Result<String, any Error> = Result { try TestGuestBuild.build(into: "hostview") + "/appliance-ticker" }

    struct Row {
        var name: String, appliance: String, state: String, resident: Int?, uptime: Double?, problem: String?
    }

    static func ps(_ runtime: String, _ extra: [String] = []) throws -> [Row] {
        let outcome = try ConfigCommandTests.run(["ps", "--json", "--runtime-dir", runtime] + extra)
        guard outcome.status == 0 else { throw POSIXError(.EIO, userInfo: [NSLocalizedDescriptionKey: "ps: \(outcome.stderr)"]) }
        let rows = try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [[String: Any]] ?? []
        return rows.map { Row(name: $0["name"] as? String ?? "", appliance: $0["appliance"] as? String ?? "", state: $0["state"] as? String ?? "",
                              resident: $0["residentBytes"] as? Int, uptime: $0["uptimeSeconds"] as? Double, problem: $0["problem"] as? String) }
    }

    static func control(_ arguments: [String], runtime: String) throws -> CommandLineTests.Outcome {
        try ConfigCommandTests.run(arguments + ["--runtime-dir", runtime])
    }

    @Test func psListsTwoGuestsThatPauseResumeAndStopByName() throws {
        let appliance = try Self.ticker.get()
        let directory = try TemporaryDirectory("streamvm-hostview")
        let runtime = directory.sub("run")
        let guests = try ["alpha", "beta"].map { name in
            try BackgroundCommand(["run", appliance, "--name", name, "--runtime-dir", runtime, "--timeout", "240"],
                                  logDirectory: directory.path, label: name)
        }
        let listed = guests[0].wait(seconds: 60) { ((try? Self.ps(runtime)) ?? []).filter { $0.state == "running" }.count == 2 }
        let rows = try Self.ps(runtime)
        #expect(listed, "ps: \(rows), alpha: \(guests[0].stderr), beta: \(guests[1].stderr)")
        #expect(rows.map(\.name) == ["alpha", "beta"])
        #expect(rows.allSatisfy { $0.appliance == "testguest-ticker" && ($0.resident ?? 0) > 0 && $0.uptime != nil })
        let table = try ConfigCommandTests.run(["ps", "--runtime-dir", runtime])
        #expect(table.stdout.hasPrefix("NAME"), "\(table.stdout)")
        #expect(table.stdout.contains("alpha") && table.stdout.contains("testguest-ticker"))

        // A second instance cannot take a live name.
        let taken = try ConfigCommandTests.run(["run", appliance, "--name", "alpha", "--runtime-dir", runtime, "--timeout", "5"])
        #expect(taken.status == 1)
        #expect(taken.stderr.contains("name alpha is taken by running process"), "\(taken.stderr)")

        #expect(try Self.control(["pause", "alpha"], runtime: runtime).status == 0)
        #expect(try Self.ps(runtime).map(\.state) == ["paused", "running"])
        #expect(try Self.control(["resume", "alpha"], runtime: runtime).status == 0)
        #expect(try Self.ps(runtime).map(\.state) == ["running", "running"])

        let stop = try Self.control(["stop", "beta"], runtime: runtime)
        #expect(stop.status == 0, "\(stop.stderr)")
        #expect(guests[1].exitStatus(within: 30) == 130, "beta: \(guests[1].stderr)")
        #expect(try Self.ps(runtime).map(\.name) == ["alpha"])
        #expect(!FileManager.default.fileExists(atPath: "\(runtime)/beta.sock"))

        // A paused guest stops too.
        #expect(try Self.control(["pause", "alpha"], runtime: runtime).status == 0)
        #expect(try Self.control(["stop", "alpha"], runtime: runtime).status == 0)
        #expect(guests[0].exitStatus(within: 30) == 130, "alpha: \(guests[0].stderr)")
        #expect(try Self.ps(runtime).isEmpty)

        let unknown = try Self.control(["stop", "gamma"], runtime: runtime)
        #expect(unknown.status == 1)
        #expect(unknown.stderr == "streamvm: no instance 'gamma' is registered in \(runtime) (see `streamvm ps`)\n", "\(unknown.stderr)")
    }

    @Test func anEntryWhoseVMMDiedIsStaleAndPruned() throws {
        let appliance = try Self.ticker.get()
        let directory = try TemporaryDirectory("streamvm-hostview")
        let runtime = directory.sub("run")
        let guest = try BackgroundCommand(["run", appliance, "--name", "doomed", "--runtime-dir", runtime, "--timeout", "240"],
                                          logDirectory: directory.path, label: "doomed")
        #expect(guest.wait(seconds: 60) { ((try? Self.ps(runtime)) ?? []).first?.state == "running" }, "\(guest.stderr)")
        // SIGKILL: no chance to unregister, as after a crash.
        kill(guest.process.processIdentifier, SIGKILL)
        guest.process.waitUntilExit()
        let stale = try Self.ps(runtime)
        #expect(stale.map(\.state) == ["stale"])
        #expect(stale.first?.problem?.contains("is gone") == true, "\(stale)")
        let refused = try Self.control(["pause", "doomed"], runtime: runtime)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("doomed is not running"), "\(refused.stderr)")
        _ = try Self.ps(runtime, ["--prune"])
        #expect(try Self.ps(runtime).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(runtime)/doomed.json"))
        #expect(!FileManager.default.fileExists(atPath: "\(runtime)/doomed.sock"))

        // The name is free again.
        let again = try BackgroundCommand(["run", appliance, "--name", "doomed", "--runtime-dir", runtime, "--timeout", "240"],
                                          logDirectory: directory.path, label: "again")
        #expect(again.wait(seconds: 60) { ((try? Self.ps(runtime)) ?? []).first?.state == "running" }, "\(again.stderr)")
        #expect(try Self.control(["stop", "doomed"], runtime: runtime).status == 0)
        #expect(again.exitStatus(within: 30) == 130)
    }
}
