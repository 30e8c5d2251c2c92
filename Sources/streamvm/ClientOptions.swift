import ArgumentParser
import Catalog
import Foundation
import Logging
import StreamClient

/// Options every command that reads a remote catalogue shares: trust, origins, cache.
struct ClientOptions: ParsableArguments {
    @Option(name: .customLong("origin"), help: "Another origin serving the same catalogue, tried in order when earlier ones fail (repeatable).")
    var extraOrigins: [String] = []

    @Option(help: "Public key file (from `streamvm keygen`) the catalogue must be signed with.")
    var trust: String?

    @Flag(help: "Accept a catalogue without checking who signed it (objects are still checked against their digests).")
    var insecure = false

    @Option(help: "Chunk cache directory, shared by all appliances on this host.")
    var cacheDir: String = ClientOptions.defaultCacheDirectory

    @Option(help: "Chunk cache size limit, e.g. 20G, 512M.")
    var cacheSize: String = "20G"

    @Option(help: "Seconds without data after which a transfer is retried.")
    var stallTimeout: Double = 15

    static var defaultCacheDirectory: String {
        if let xdg = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"], !xdg.isEmpty { return "\(xdg)/streamvm" }
        return "\(NSHomeDirectory())/.cache/streamvm"
    }

    func trustPolicy() throws -> SignedCatalog.Trust { try Self.trustPolicy(trust: trust, insecure: insecure) }

    /// A trusted key is required; accepting any signer needs an explicit --insecure.
    static func trustPolicy(trust: String?, insecure: Bool) throws -> SignedCatalog.Trust {
        if let trust { return .key(try TrustedKey(file: trust)) }
        guard insecure else {
            throw ValidationError("no trusted key: pass --trust <key.pub>, or --insecure to accept any catalogue signer")
        }
        return .insecure
    }

    func cacheCapacity() throws -> Int {
        guard let bytes = ByteSize.parse(cacheSize) else { throw ValidationError("--cache-size '\(cacheSize)' is not a size like 20G") }
        return bytes
    }

    func makeCache(logger: Logger) throws -> ChunkCache {
        try ChunkCache(root: cacheDir, capacityBytes: try cacheCapacity(), logger: logger)
    }

    /// The fetcher and verified catalogue client for `primary` plus `--origin`s; with `rollback`, it
    /// refuses catalogues older than this host has accepted (boot, fetch).
    func makeClient(primary: [Origin], rollback: RollbackProtection? = nil, logger: Logger) throws -> CatalogClient {
        let trust = try trustPolicy()
        var configuration = Fetcher.Configuration()
        configuration.stallTimeoutSeconds = stallTimeout
        let fetcher = try Fetcher(configuration: configuration, logger: logger)
        let origins = primary + (try extraOrigins.map { try Origin($0) })
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
