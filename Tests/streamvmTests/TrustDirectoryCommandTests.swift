import Foundation
import Testing
import TestSupport

/// Without `--trust`, `fetch` verifies the catalogue against the host's trust directory: a real
/// `keygen`, `publish` and `serve` (HTTP/2 on loopback), all through the built binary.
@Suite(.timeLimit(.minutes(3)), .offCooperativePool)
struct TrustDirectoryCommandTests {
    final class Published {
        let directory: TemporaryDirectory
        let server: BackgroundCommand
        let url: String

        init() throws {
            directory = try TemporaryDirectory("streamvm-trustcli")
            let appliance = directory.sub("appliance")
            try FileManager.default.createDirectory(atPath: appliance, withIntermediateDirectories: true)
            try Data(#"{"name":"trusty","version":"1","memoryMiB":16,"vcpus":1,"kernelFormat":"flat","readyMarker":"READY"}"#.utf8)
                .write(to: URL(fileURLWithPath: "\(appliance)/appliance.json"))
            var generator = SystemRandomNumberGenerator()
            try Data((0..<300_000).map { _ in UInt8.random(in: 0...255, using: &generator) }).write(to: URL(fileURLWithPath: "\(appliance)/kernel"))
            for arguments in [["keygen", directory.sub("publisher")], ["keygen", directory.sub("stranger")],
                              ["publish", appliance, "--catalog", directory.sub("catalog"), "--key", directory.sub("publisher.key")]] {
                let outcome = try ConfigCommandTests.run(arguments)
                guard outcome.status == 0 else { throw POSIXError(.EIO, userInfo: [NSLocalizedDescriptionKey: "\(arguments): \(outcome.stderr)"]) }
            }
            // An empty trust directory for serve, so a host trust store never changes what it accepts.
            try FileManager.default.createDirectory(atPath: directory.sub("serve-trust"), withIntermediateDirectories: true)
            let server = try BackgroundCommand(["serve", "--catalog", directory.sub("catalog"), "--port", "0", "--trust-dir", directory.sub("serve-trust")],
                                           logDirectory: directory.path, label: "serve", environment: ["STREAMVM_LOG_LEVEL": "notice"])
            var found: String?
            _ = server.wait(seconds: 60) {
                guard let range = server.stderr.range(of: #"http://127\.0\.0\.1:[0-9]+/"#, options: .regularExpression) else { return false }
                found = String(server.stderr[range])
                return true
            }
            guard let found else { throw POSIXError(.EIO, userInfo: [NSLocalizedDescriptionKey: "serve did not start: \(server.stderr)"]) }
            self.server = server
            url = found + "trusty"
        }

        /// `fetch` into a fresh directory with these extra arguments.
        func fetch(_ label: String, _ arguments: [String], environment: [String: String] = [:]) throws -> CommandLineTests.Outcome {
            try ConfigCommandTests.run(["fetch", url, directory.sub("out-\(label)"), "--cache-dir", directory.sub("cache-\(label)"),
                                        "--state-dir", directory.sub("state-\(label)")] + arguments, environment: environment)
        }

        func trustDirectory(_ name: String, keys: [String]) throws -> String {
            let path = directory.sub(name)
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            chmod(path, 0o755)
            for key in keys { try FileManager.default.copyItem(atPath: directory.sub("\(key).pub"), toPath: "\(path)/\(key).pub") }
            return path
        }
    }

    @Test func fetchUsesTheTrustDirectoryWhenTrustIsAbsent() throws {
        let published = try Published()
        let trusted = try published.trustDirectory("trusted.d", keys: ["stranger", "publisher"])
        let byFlag = try published.fetch("flag", ["--trust-dir", trusted])
        #expect(byFlag.status == 0, "\(byFlag.stderr)")
        #expect(FileManager.default.contentsEqual(atPath: published.directory.sub("out-flag/kernel"), andPath: published.directory.sub("appliance/kernel")))

        // The same through the config file's trustDirectory.
        let config = published.directory.sub("config.json")
        try Data(#"{"trustDirectory": "\#(trusted)"}"#.utf8).write(to: URL(fileURLWithPath: config))
        let byConfig = try published.fetch("config", [], environment: ["STREAMVM_CONFIG": config])
        #expect(byConfig.status == 0, "\(byConfig.stderr)")

        // A directory without the publisher's key refuses the catalogue, naming the signer.
        let others = try published.trustDirectory("others.d", keys: ["stranger"])
        let refused = try published.fetch("refused", ["--trust-dir", others])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("which is not the trusted key"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: published.directory.sub("out-refused/kernel")))

        // An empty one says how to trust a key.
        let empty = try published.trustDirectory("empty.d", keys: [])
        let none = try published.fetch("none", ["--trust-dir", empty])
        #expect(none.status == 1)
        #expect(none.stderr.contains("no trusted key: pass --trust <key.pub>, put the key in \(empty)"), "\(none.stderr)")
    }

    @Test func aBadKeyFileOrWritableDirectoryIsNamed() throws {
        let published = try Published()
        let trusted = try published.trustDirectory("bad.d", keys: ["publisher"])
        try Data("streamvm-ed25519-public AAAA\n".utf8).write(to: URL(fileURLWithPath: "\(trusted)/short.pub"))
        let bad = try published.fetch("bad", ["--trust-dir", trusted])
        #expect(bad.status == 1)
        #expect(bad.stderr == "streamvm: \(trusted)/short.pub: not a StreamVM key file: not a 32-byte Ed25519 public key\n", "\(bad.stderr)")

        try FileManager.default.removeItem(atPath: "\(trusted)/short.pub")
        chmod(trusted, 0o777)
        let writable = try published.fetch("writable", ["--trust-dir", trusted])
        #expect(writable.status == 1)
        #expect(writable.stderr.hasPrefix("streamvm: \(trusted): trust directory refused: world-writable"), "\(writable.stderr)")
        // --trust still works: the directory is not consulted.
        let explicit = try published.fetch("explicit", ["--trust-dir", trusted, "--trust", published.directory.sub("publisher.pub")])
        #expect(explicit.status == 0, "\(explicit.stderr)")
    }
}
