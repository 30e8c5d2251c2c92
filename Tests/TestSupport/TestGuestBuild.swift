import Foundation

/// Builds appliances/testguest with its build script (system gcc and binutils) into
/// `.build-appliances/<name>`: each suite names its own directory so parallel builds never race.
public enum TestGuestBuild {
    public static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs the build script; returns the output directory (testguest.bin, appliance-<mode>/ …).
    public static func build(into name: String) throws -> String {
        let output = repositoryRoot.appendingPathComponent(".build-appliances/\(name)").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = [repositoryRoot.appendingPathComponent("appliances/testguest/build.sh").path, output]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let log = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "test guest build failed: \(String(decoding: log, as: UTF8.self))")
        }
        return output
    }
}
