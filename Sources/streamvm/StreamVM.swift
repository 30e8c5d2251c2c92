import ArgumentParser

/// The one command-line entry point. Subcommands only parse arguments and wire modules together.
@main
struct StreamVM: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streamvm",
        abstract: "Publish VM appliances and stream-boot them over HTTP/2.",
        subcommands: [KeygenCommand.self,
                      ServeCommand.self, PushCommand.self, BenchCommand.self]
    )
}
