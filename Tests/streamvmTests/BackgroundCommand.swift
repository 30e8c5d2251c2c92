import Foundation
import Glibc

/// The built `streamvm` running in the background (a server, a guest), its stderr and stdout going
/// to files the test reads while it runs; terminated (SIGTERM, then SIGKILL) when the test is done.
final class BackgroundCommand: @unchecked Sendable {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String

    init(_ arguments: [String], logDirectory: String, label: String, environment: [String: String] = [:]) throws {
        stdoutPath = "\(logDirectory)/\(label).out"
        stderrPath = "\(logDirectory)/\(label).err"
        FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: try CommandLineTests.binary())
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.run()
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Polls `condition` until it holds (true) or `seconds` pass or the process exits (false).
    func wait(seconds: Double, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            if !process.isRunning { return condition() }
            usleep(50_000)
        }
        return false
    }

    /// Waits for the process to exit; nil if it is still running after `seconds`.
    func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { usleep(50_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        if exitStatus(within: 10) == nil { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
