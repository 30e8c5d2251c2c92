import Foundation
import Testing
import TestSupport

/// `streamvm boot` through the built binary, as an operator runs it: the blk test guest published,
/// served by `streamvm serve` on loopback and stream-booted. On a terminal (a pty from util-linux
/// `script`) it shows when the guest started, when it was ready and a closing summary; with stderr
/// in a file it prints only how the guest ended.
@Suite(.enabled(if: HostTools.hasKVM, "/dev/kvm is absent or not accessible: boot command tests skipped"),
       .timeLimit(.minutes(5)), .serialized, .offCooperativePool)
struct BootCommandTests {
    static let appliance: Result<String, any Error> = Result { try TestGuestBuild.build(into: "bootcli") + "/appliance-blk" }

    /// A published and served catalogue of the blk guest; the server stops with the value.
    final class Served {
        let directory: TemporaryDirectory
        let server: BackgroundCommand
        let url: String

        init() throws {
            directory = try TemporaryDirectory("streamvm-bootcli")
            let keygen = try ConfigCommandTests.run(["keygen", directory.sub("publisher")])
            guard keygen.status == 0 else { throw POSIXError(.EIO, userInfo: [NSLocalizedDescriptionKey: "keygen: \(keygen.stderr)"]) }
            let publish = try ConfigCommandTests.run(["publish", try BootCommandTests.appliance.get(), "--catalog", directory.sub("catalog"),
                                                      "--key", directory.sub("publisher.key")])
            guard publish.status == 0 else { throw POSIXError(.EIO, userInfo: [NSLocalizedDescriptionKey: "publish: \(publish.stderr)"]) }
            let background = try BackgroundCommand(["serve", "--catalog", directory.sub("catalog"), "--host", "127.0.0.1", "--port", "0"],
                                                   logDirectory: directory.path, label: "serve")
            server = background
            let pattern = try Regex(#"http://127\.0\.0\.1:([0-9]+)/"#)
            var found: String?
            _ = background.wait(seconds: 60) {
                found = (background.stderr + background.stdout).firstMatch(of: pattern).map { String($0.output[1].substring ?? "") }
                return found != nil
            }
            guard let port = found else { throw POSIXError(.EIO, userInfo: [NSLocalizedDescriptionKey: "serve printed no URL: \(background.stderr)"]) }
            url = "http://127.0.0.1:\(port)/testguest-blk"
        }

        func bootArguments(cache: String) -> [String] {
            ["boot", url, "--trust", directory.sub("publisher.pub"), "--cache-dir", directory.sub(cache),
             "--state-dir", directory.sub("state"), "--no-input", "--timeout", "120"]
        }
    }

    /// Runs the binary under `script`, which gives it a pty as stdin, stdout and stderr.
    static func onTerminal(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let command = ([try CommandLineTests.binary()] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
            .joined(separator: " ")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["--quiet", "--return", "--command", command, "/dev/null"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    @Test func onATerminalBootShowsStartReadyAndASummaryAndInALogOnlyHowItEnded() throws {
        let served = try Served()

        let terminal = try Self.onTerminal(served.bootArguments(cache: "cache-tty"))
        #expect(terminal.status == 0, "\(terminal.output)")
        let lines = terminal.output.components(separatedBy: CharacterSet.newlines)
        let started = lines.firstIndex { $0.contains("streamvm: guest started after ") }
        let ready = lines.firstIndex { $0.contains("streamvm: ready after ") }
        let ended = lines.firstIndex { $0.contains("streamvm: ended (guest powered off (code 0)) after ") }
        #expect(started != nil && ready != nil && ended != nil, "\(terminal.output)")
        if let started, let ready, let ended {
            #expect(started < ready && ready < ended, "\(terminal.output)")
            #expect(lines[ready].contains("received ") && lines[ready].contains("stall"), "\(lines[ready])")
            #expect(lines[ended].contains("cache hits 0 chunks"), "a fresh cache has no hits: \(lines[ended])")
        }

        // The same boot again with the same cache: every chunk it reads is local now.
        let again = try Self.onTerminal(served.bootArguments(cache: "cache-tty"))
        let summary = again.output.components(separatedBy: CharacterSet.newlines).first { $0.contains("streamvm: ended (") } ?? ""
        #expect(!summary.contains("cache hits 0 chunks") && summary.contains("cache hits "), "\(again.output)")

        let log = try ConfigCommandTests.run(served.bootArguments(cache: "cache-log"))
        #expect(log.status == 0, "\(log.stderr)")
        #expect(log.stderr.contains("streamvm: guest powered off (code 0)"), "\(log.stderr)")
        #expect(!log.stderr.contains("buffering") && !log.stderr.contains("guest started after"), "no progress text in a log: \(log.stderr)")
    }

    /// A boot through `streamvm link` (an emulated WAN link in front of the server) writes its
    /// timeline: an SVG with the bytes it received and its ready moment. The link forwards every
    /// byte intact (the boot verifies each chunk against the signed catalogue) and ends on SIGTERM.
    @Test func aBootThroughAnEmulatedLinkWritesItsTimeline() throws {
        let served = try Served()
        let upstream = String(served.url.dropLast("/testguest-blk".count))
        let urlFile = served.directory.sub("link.url")
        let link = try BackgroundCommand(["link", upstream, "--rate", "50", "--rtt", "10", "--url-file", urlFile],
                                         logDirectory: served.directory.path, label: "link")
        #expect(link.wait(seconds: 60) { FileManager.default.fileExists(atPath: urlFile) }, "\(link.stderr)")
        let origin = try String(contentsOfFile: urlFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(origin.hasPrefix("http://127.0.0.1:") && origin != upstream)

        var arguments = served.bootArguments(cache: "cache-link")
        arguments[1] = origin + "/testguest-blk"
        let timeline = served.directory.sub("boot.svg")
        let boot = try ConfigCommandTests.run(arguments + ["--timeline", timeline])
        #expect(boot.status == 0, "\(boot.stderr)")
        let svg = try String(contentsOfFile: timeline, encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("<polyline") && svg.contains("READY"), "\(svg.prefix(400))")

        kill(link.process.processIdentifier, SIGTERM)
        #expect(link.exitStatus(within: 30) == 0)
        #expect(link.stdout.contains("connections forwarded"), "\(link.stdout)")
    }

    @Test func linkRefusesAnUpstreamThatIsNotLoopbackHTTP() throws {
        let outcome = try ConfigCommandTests.run(["link", "https://example.invalid:443"])
        #expect(outcome.status != 0)
        #expect(outcome.stderr.contains("is not http://127.0.0.1:PORT"), "\(outcome.stderr)")
    }
}
