import ArgumentParser
import StreamClient

struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Inspect and maintain the host's chunk cache.",
        subcommands: [Stats.self, GC.self, Verify.self])

    struct Location: ParsableArguments {
        @Option(help: "Chunk cache directory (default: the config's cacheDirectory, else $XDG_CACHE_HOME/streamvm or ~/.cache/streamvm).")
        var cacheDir: String?

        @Option(help: "Size limit to enforce, e.g. 20G (default: the config's cacheSize, else 20G).")
        var cacheSize: String?

        @OptionGroup var configFile: ConfigFileOption

        func open() throws -> ChunkCache {
            let config = try configFile.load().file
            let size = Setting.resolve(flag: cacheSize, flagName: "--cache-size", file: config.cacheSize, config: config, default: ClientOptions.defaultCacheSize)
            let directory = Setting.resolve(flag: cacheDir, flagName: "--cache-dir", file: config.cacheDirectory, config: config, default: ClientOptions.defaultCacheDirectory)
            guard let capacity = ByteSize.parse(size.value) else { throw ValidationError("cache size '\(size.value)' (from \(size.source)) is not a size like 20G") }
            return try ChunkCache(root: directory.value, capacityBytes: capacity, logger: commandLogger("streamvm.cache"))
        }
    }

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Chunks, bytes and pins in the cache.")
        @OptionGroup var location: Location
        func run() throws { try printJSON(try location.open().statistics()) }
    }

    struct GC: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc", abstract: "Remove crash leftovers and evict least-recently-used unpinned chunks down to the size limit.")
        @OptionGroup var location: Location
        func run() throws { try printJSON(try location.open().collectGarbage()) }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hash every cached chunk; delete damaged ones.")
        @OptionGroup var location: Location
        func run() throws {
            let report = try location.open().verifyAll()
            try printJSON(report)
            if report.damagedRemoved > 0 { throw ExitCode(1) }
        }
    }
}
