import ArgumentParser
import Catalog
import Foundation
import Logging
import StreamClient

/// Options every command that reads a remote catalogue shares: trust, origins, cache. Each falls
/// back to the host's configuration file, then to a default (`streamvm config` shows which).
struct ClientOptions: ParsableArguments {
    @Option(name: .customLong("origin"), help: "Another origin serving the same catalogue, tried in order when earlier ones fail (repeatable; default: the config's origins).")
    var extraOrigins: [String] = []

    @Option(help: "Public key file (from `streamvm keygen`) the catalogue must be signed with (default: any key in the trust directory).")
    var trust: String?

    @Option(name: .customLong("trust-dir"), help: "Directory of trusted public keys (*.pub) used without --trust (default: the config's trustDirectory, else /etc/streamvm/trusted.d).")
    var trustDir: String?

    @Flag(help: "Accept a catalogue without checking who signed it (objects are still checked against their digests).")
    var insecure = false

    @Option(help: "Chunk cache directory, shared by all appliances on this host (default: the config's cacheDirectory, else $XDG_CACHE_HOME/streamvm or ~/.cache/streamvm).")
    var cacheDir: String?

    @Option(help: "Chunk cache size limit, e.g. 20G, 512M (default: the config's cacheSize, else 20G).")
    var cacheSize: String?

    @Option(help: "Seconds without data after which a transfer is retried.")
    var stallTimeout: Double = 15

    @OptionGroup var configFile: ConfigFileOption

    static let defaultCacheSize = "20G"

    static var defaultCacheDirectory: String {
        if let xdg = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"], !xdg.isEmpty { return "\(xdg)/streamvm" }
        return "\(NSHomeDirectory())/.cache/streamvm"
    }

    /// The effective client settings: flag, else config file, else default.
    struct Resolved {
        var config: HostConfigFile
        var configSource: String
        var cacheDirectory: Setting<String>
        var cacheSize: Setting<String>
        var origins: Setting<[String]>
        var trustDirectory: Setting<String>
    }

    func resolved() throws -> Resolved {
        let (config, source) = try configFile.load()
        return Resolved(
            config: config, configSource: source,
            cacheDirectory: .resolve(flag: cacheDir, flagName: "--cache-dir", file: config.cacheDirectory, config: config, default: Self.defaultCacheDirectory),
            cacheSize: .resolve(flag: cacheSize, flagName: "--cache-size", file: config.cacheSize, config: config, default: Self.defaultCacheSize),
            origins: .resolve(flag: extraOrigins.isEmpty ? nil : extraOrigins, flagName: "--origin", file: config.origins, config: config, default: []),
            trustDirectory: TrustSource.directory(flag: trustDir, config: config))
    }

    func trustPolicy() throws -> SignedCatalog.Trust {
        try TrustSource.policy(trust: trust, insecure: insecure, trustDirectory: try resolved().trustDirectory)
    }

    func cacheCapacity() throws -> Int {
        let size = try resolved().cacheSize
        guard let bytes = ByteSize.parse(size.value) else { throw ValidationError("cache size '\(size.value)' (from \(size.source)) is not a size like 20G") }
        return bytes
    }

    func makeCache(logger: Logger) throws -> ChunkCache {
        try ChunkCache(root: try resolved().cacheDirectory.value, capacityBytes: try cacheCapacity(), logger: logger)
    }

    /// The fetcher and verified catalogue client for `primary` plus `--origin`s; with `rollback`, it
    /// refuses catalogues older than this host has accepted (boot, fetch).
    func makeClient(primary: [Origin], rollback: RollbackProtection? = nil, logger: Logger) throws -> CatalogClient {
        let trust = try trustPolicy()
        var configuration = Fetcher.Configuration()
        configuration.stallTimeoutSeconds = stallTimeout
        let fetcher = try Fetcher(configuration: configuration, logger: logger)
        let origins = primary + (try resolved().origins.value.map { try Origin($0) }).filter { !primary.contains($0) }
        return try CatalogClient(origins: origins, trust: trust, fetcher: fetcher, rollbackProtection: rollback, logger: logger)
    }
}

/// Parses sizes like 512M, 20G, 1T, 4096 (binary units).
enum ByteSize {
    static func parse(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = text.uppercased()
        if digits.hasSuffix("B") { digits.removeLast() }
        if digits.hasSuffix("I") { digits.removeLast() }
        var multiplier = 1
        if let last = digits.last, let unit = units[last] {
            multiplier = unit
            digits.removeLast()
        }
        guard let value = Int(digits), value >= 0 else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }
}

/// Commands print JSON reports to standard output so scripts can read them.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Loggers of client commands; the level comes from `LoggingSetup` (STREAMVM_LOG_LEVEL).
func commandLogger(_ label: String) -> Logger { Logger(label: label) }
