import ArgumentParser

/// The one command-line entry point. Subcommands only parse arguments and wire modules together.
@main
struct StreamVM: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streamvm",
        abstract: "Publish VM appliances and stream-boot them over HTTP/2.",
        subcommands: [KeygenCommand.self, PublishCommand.self, ServeCommand.self, PushCommand.self, RunCommand.self,
                      SnapshotCommand.self, MirrorCommand.self, FetchCommand.self, CacheCommand.self, BenchCommand.self,
                      BootCommand.self, LearnCommand.self]
    )

    static func main() async {
        LoggingSetup.bootstrap()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
