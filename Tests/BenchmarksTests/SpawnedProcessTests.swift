import Benchmarks
import Foundation
import TestSupport
import Testing

/// Helper processes must stop when asked, whichever thread started them: nginx started from a
/// Dispatch worker (whose blocked SIGTERM it used to inherit) ignored SIGTERM and hung the suites.
@Suite struct SpawnedProcessTests {
    /// The SigBlk mask of a running process, from /proc.
    private static func blockedSignals(_ pid: pid_t) throws -> UInt64 {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("SigBlk:") })
        return try #require(UInt64(line.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16))
    }

    private static func isAlive(_ pid: pid_t) -> Bool {
        // A reaped child is gone; kill(pid, 0) then fails with ESRCH.
        kill(pid, 0) == 0
    }

    @Test func childStartedFromAWorkerThreadHasNoBlockedSignalsAndStops() async throws {
        // A Dispatch worker blocks SIGTERM; the child must not inherit that.
        let child = try await offPool { try SpawnedProcess(executable: "/bin/sleep", arguments: ["600"]) }
        #expect(child.isRunning)
        #expect(try Self.blockedSignals(child.pid) == 0)
        try await offPool { child.stop(grace: 60) }
        #expect(!child.isRunning)
        #expect(!Self.isAlive(child.pid))
        // SIGTERM itself ended it, not the SIGKILL that follows an expired grace period.
        #expect(child.terminationSignal == SIGTERM)
    }

    @Test func aChildIgnoringSIGTERMIsKilledAfterTheGracePeriod() async throws {
        let child = try await offPool {
            try SpawnedProcess(executable: "/bin/sh", arguments: ["-c", "trap '' TERM; while :; do sleep 1; done"])
        }
        try await Task.sleep(nanoseconds: 200_000_000)
        try await offPool { child.stop(grace: 0.5) }
        #expect(!child.isRunning)
        #expect(child.terminationSignal == SIGKILL)
        #expect(!Self.isAlive(child.pid))
    }

    @Test(.needsNginx) func nginxStopsByPIDAndLeavesNothingBehind() async throws {
        let directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.sub("root"), withIntermediateDirectories: true)
        let nginx = try #require(try await offPool({ try NginxProcess(root: directory.sub("root")) }), "nginx is not installed")
        let pid = nginx.pid
        #expect(Self.isAlive(pid))
        #expect(try Self.blockedSignals(pid) == 0)
        try await offPool { nginx.stop() }
        #expect(!nginx.isRunning)
        #expect(!Self.isAlive(pid))
    }
}
