import ArgumentParser
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The one command-line entry point. Subcommands only parse arguments and wire modules together.
@main
struct StreamVM: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streamvm",
        abstract: "Publish VM appliances and stream-boot them over HTTP/2.",
        subcommands: [KeygenCommand.self, PublishCommand.self, ServeCommand.self, PushCommand.self, RunCommand.self,
                      SnapshotCommand.self, MirrorCommand.self, FetchCommand.self, CacheCommand.self, BenchCommand.self,
                      BootCommand.self, LearnCommand.self, LinkCommand.self,
                      ConfigCommand.self, PsCommand.self, StopCommand.self, PauseCommand.self, ResumeCommand.self]
    )

    static func main() async {
        // Line-buffered stdout: results and progress reach a pipe (tee, a lab console) as they are
        // printed, not when a 4 KiB buffer fills or the process exits.
        setvbuf(stdout, nil, _IOLBF, 0)
        LoggingSetup.bootstrap()
        // Argument errors get ArgumentParser's message and the usage; errors while a command runs get
        // one line naming the file or field (ErrorReport), never the usage banner.
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ExitCode {
            exit(withError: error)
        } catch where isArgumentParserCommand(command) {
            // `--help` and `help` parse into ArgumentParser's own help command, whose run() throws
            // the help request: ArgumentParser prints it (exit status 0).
            exit(withError: error)
        } catch let error as CleanExit {
            exit(withError: error)
        } catch {
            fputs("streamvm: \(ErrorReport.message(for: error))\n", stderr)
            Glibc.exit(ExitCode.failure.rawValue)
        }
    }

    /// Commands ArgumentParser adds itself (help) rather than ours.
    private static func isArgumentParserCommand(_ command: any ParsableCommand) -> Bool {
        String(reflecting: type(of: command)).hasPrefix("ArgumentParser.")
    }
}
