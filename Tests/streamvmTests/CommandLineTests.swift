import Foundation
import Testing
import TestSupport

/// The command line as a user meets it: the built `streamvm` binary run as a child process. Help
/// goes to stdout with status 0; a runtime error is one line naming the file and the problem, no
/// usage banner, non-zero status.
@Suite(.offCooperativePool) struct CommandLineTests {
    struct Outcome { var status: Int32; var stdout: String; var stderr: String }

    /// `streamvm` beside the test bundle: `swift build --build-tests` and `swift test` build every product.
    static func binary() throws -> String {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let path = directory.appendingPathComponent("streamvm").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw POSIXError(.ENOENT, userInfo: [NSLocalizedDescriptionKey: "\(path): the streamvm binary was not built"])
        }
        return path
    }

    static func run(_ arguments: [String]) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try binary())
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                       stderr: String(decoding: stderr, as: UTF8.self))
    }

    @Test(arguments: [["--help"], ["run", "--help"], ["bench", "vmm", "--help"], ["help", "serve"]])
    func helpIsPrintedWithStatusZero(_ arguments: [String]) throws {
        let outcome = try Self.run(arguments)
        #expect(outcome.status == 0, "\(arguments): \(outcome.stderr)")
        #expect(outcome.stdout.contains("USAGE: streamvm"), "\(arguments): \(outcome.stdout)")
        #expect(!outcome.stderr.contains("CommandError"))
    }

    @Test func aMissingApplianceIsOneLineWithoutUsage() throws {
        let outcome = try Self.run(["run", "/nonexistent-streamvm-appliance"])
        #expect(outcome.status != 0)
        let lines = outcome.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.stderr)")
        #expect(lines.first?.hasPrefix("streamvm: /nonexistent-streamvm-appliance") == true, "\(outcome.stderr)")
        #expect(!outcome.stderr.contains("USAGE") && !outcome.stdout.contains("USAGE"))
    }

    @Test func aMissingFieldNamesTheFileAndTheField() throws {
        let directory = try TemporaryDirectory()
        try Data(#"{"name":"a","version":"1","memoryMiB":64,"vcpus":1}"#.utf8).write(to: URL(fileURLWithPath: directory.sub("appliance.json")))
        let outcome = try Self.run(["run", directory.path])
        #expect(outcome.status != 0)
        #expect(outcome.stderr == "streamvm: \(directory.sub("appliance.json")): malformed: missing field readyMarker\n", "\(outcome.stderr)")
    }

    @Test func anUnknownOptionIsAUsageError() throws {
        let outcome = try Self.run(["run", "/nonexistent-streamvm-appliance", "--no-such-option"])
        #expect(outcome.status == 64, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("--no-such-option"))
    }
}
