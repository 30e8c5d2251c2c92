import Benchmarks
import ArgumentParser

/// `streamvm bench …`: benchmarks that print JSON and a table for BENCHMARKS.md.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (JSON plus a Markdown table).",
        subcommands: [BenchPublishCommand.self, BenchServeCommand.self, BenchClientCommand.self, BenchVMMCommand.self,
                      BenchUffdCommand.self, BenchStreamCommand.self, BenchNetCommand.self, BenchDedupCommand.self, BenchDilationCommand.self])
}
