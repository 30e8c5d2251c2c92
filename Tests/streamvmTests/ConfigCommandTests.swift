import Foundation
import Testing
import TestSupport

/// `streamvm config` and the configuration file, through the built binary: precedence default <
/// file < flag, and a bad file named with its field.
@Suite(.offCooperativePool) struct ConfigCommandTests {
    /// Runs the binary with extra environment variables (STREAMVM_CONFIG removed unless given).
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> CommandLineTests.Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try CommandLineTests.binary())
        process.arguments = arguments
        var base = ProcessInfo.processInfo.environment
        base.removeValue(forKey: "STREAMVM_CONFIG")
        process.environment = base.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return .init(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// `config --json` as setting name -> (value, source); only the first "trusted key" row is kept.
    static func settings(_ arguments: [String], environment: [String: String] = [:]) throws -> [String: (value: String, source: String)] {
        let outcome = try run(["config", "--json"] + arguments, environment: environment)
        guard outcome.status == 0 else { throw POSIXError(.EINVAL, userInfo: [NSLocalizedDescriptionKey: "config failed: \(outcome.stderr)"]) }
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [[String: String]])
        var result: [String: (value: String, source: String)] = [:]
        for row in rows where result[row["setting"] ?? ""] == nil { result[row["setting"]!] = (row["value"] ?? "", row["source"] ?? "") }
        return result
    }

    static func writeConfig(_ json: String, in directory: TemporaryDirectory, mode: mode_t = 0o644) throws -> String {
        let path = directory.sub("config.json")
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    @Test func precedenceIsDefaultThenFileThenFlag() throws {
        let directory = try TemporaryDirectory("streamvm-config")
        let empty = try Self.writeConfig("{}", in: directory)
        let defaults = try Self.settings(["--config", empty])
        #expect(defaults["cache size"]?.value == "20G" && defaults["cache size"]?.source == "default")
        #expect(defaults["runtime directory"]?.value == "/run/streamvm" && defaults["runtime directory"]?.source == "default")
        #expect(defaults["trust directory"]?.value == "/etc/streamvm/trusted.d")
        #expect(defaults["config file"]?.value == empty && defaults["config file"]?.source == "--config")

        let config = try Self.writeConfig("""
            {"cacheDirectory": "\(directory.sub("cache-from-file"))", "cacheSize": "5G", "origins": ["http://127.0.0.1:1/"],
             "runtimeDirectory": "\(directory.sub("run"))", "trustDirectory": "\(directory.sub("trusted.d"))",
             "uploadTokenFile": "/etc/streamvm/upload.token"}
            """, in: directory)
        let fromFile = try Self.settings(["--config", config])
        #expect(fromFile["cache directory"]?.value == directory.sub("cache-from-file") && fromFile["cache directory"]?.source == config)
        #expect(fromFile["cache size"]?.value == "5G" && fromFile["cache size"]?.source == config)
        #expect(fromFile["origins"]?.value == "http://127.0.0.1:1/")
        #expect(fromFile["runtime directory"]?.value == directory.sub("run") && fromFile["runtime directory"]?.source == config)
        #expect(fromFile["trust directory"]?.value == directory.sub("trusted.d"))
        #expect(fromFile["upload token file"]?.value == "/etc/streamvm/upload.token")
        #expect(fromFile["trace token file"]?.source == "unset")

        // The environment variable points at the same file.
        let fromEnvironment = try Self.settings([], environment: ["STREAMVM_CONFIG": config])
        #expect(fromEnvironment["cache size"]?.value == "5G" && fromEnvironment["config file"]?.source == "$STREAMVM_CONFIG")

        let fromFlags = try Self.settings(["--config", config, "--cache-dir", directory.sub("cache-from-flag"), "--cache-size", "1G",
                                           "--runtime-dir", directory.sub("run-flag"), "--trust-dir", directory.sub("keys-flag")])
        #expect(fromFlags["cache directory"]?.value == directory.sub("cache-from-flag") && fromFlags["cache directory"]?.source == "--cache-dir")
        #expect(fromFlags["cache size"]?.value == "1G" && fromFlags["cache size"]?.source == "--cache-size")
        #expect(fromFlags["runtime directory"]?.value == directory.sub("run-flag") && fromFlags["runtime directory"]?.source == "--runtime-dir")
        #expect(fromFlags["trust directory"]?.value == directory.sub("keys-flag") && fromFlags["trust directory"]?.source == "--trust-dir")
        // Flags not given still come from the file.
        #expect(fromFlags["origins"]?.source == config)
    }

    @Test(arguments: [
        (#"{"cacheDirectry": "/x"}"#, "field 'cacheDirectry': unknown field"),
        (#"{"cacheSize": 5}"#, "field 'cacheSize': must be a non-empty string"),
        (#"{"cacheSize": "lots"}"#, "field 'cacheSize': 'lots' is not a size like 20G"),
        (#"{"origins": "http://a/"}"#, "field 'origins': must be a list of URL strings"),
        (#"["cacheSize"]"#, "not a JSON object"),
        (#"{"cacheSize": "#, "not JSON"),
    ])
    func aBadConfigNamesTheFileAndField(json: String, expected: String) throws {
        let directory = try TemporaryDirectory("streamvm-config")
        let path = try Self.writeConfig(json, in: directory)
        // Every command that reads settings refuses it, not only `config`.
        for arguments in [["config", "--config", path], ["cache", "stats", "--config", path]] {
            let outcome = try Self.run(arguments)
            #expect(outcome.status == 1, "\(arguments): \(outcome.stderr)")
            #expect(outcome.stderr.hasPrefix("streamvm: \(path): \(expected)"), "\(outcome.stderr)")
        }
    }

    @Test func aWorldWritableOrMissingConfigIsRefused() throws {
        let directory = try TemporaryDirectory("streamvm-config")
        let path = try Self.writeConfig("{}", in: directory, mode: 0o666)
        let writable = try Self.run(["config", "--config", path])
        #expect(writable.status == 1)
        #expect(writable.stderr.hasPrefix("streamvm: \(path): world-writable"), "\(writable.stderr)")
        let missing = try Self.run(["config"], environment: ["STREAMVM_CONFIG": directory.sub("absent.json")])
        #expect(missing.status == 1)
        #expect(missing.stderr == "streamvm: \(directory.sub("absent.json")): No such file or directory\n", "\(missing.stderr)")
    }
}
