import ArgumentParser
import Catalog
import Foundation

/// A setting's effective value and where it came from, so `streamvm config` can say why a host
/// behaves as it does. Precedence: default < config file < flag.
struct Setting<Value: Equatable>: Equatable {
    var value: Value
    var source: String

    /// The flag's value when given, else the file's, else the default.
    static func resolve(flag: Value?, flagName: String, file: Value?, config: HostConfigFile, default fallback: Value) -> Setting {
        if let flag { return Setting(value: flag, source: flagName) }
        if let file, let path = config.path { return Setting(value: file, source: path) }
        return Setting(value: fallback, source: "default")
    }
}

/// `--config FILE`: which configuration file to read. Without it, `$STREAMVM_CONFIG`, else
/// /etc/streamvm/config.json when it exists.
struct ConfigFileOption: ParsableArguments {
    @Option(name: .customLong("config"), help: "Configuration file (default: $STREAMVM_CONFIG, else /etc/streamvm/config.json when present).")
    var path: String?

    /// The file and how it was chosen.
    func load() throws -> (file: HostConfigFile, source: String) { try Self.load(path: path) }

    static func load(path: String?) throws -> (file: HostConfigFile, source: String) {
        if let path { return (try HostConfigFile.load(path: path, required: true), "--config") }
        if let path = ProcessInfo.processInfo.environment[HostConfigFile.environmentVariable], !path.isEmpty {
            return (try HostConfigFile.load(path: path, required: true), "$\(HostConfigFile.environmentVariable)")
        }
        return (try HostConfigFile.load(path: HostConfigFile.defaultPath, required: false), "default")
    }
}

/// `--runtime-dir DIR`: where running appliances register (run, boot, ps, stop, pause, resume).
struct RuntimeDirectoryOption: ParsableArguments {
    static let defaultDirectory = "/run/streamvm"

    @Option(name: .customLong("runtime-dir"), help: "Directory where running appliances register their control socket (default: the config's runtimeDirectory, else /run/streamvm).")
    var path: String?

    func resolve(_ config: HostConfigFile) -> Setting<String> {
        .resolve(flag: path, flagName: "--runtime-dir", file: config.runtimeDirectory, config: config, default: Self.defaultDirectory)
    }
}

/// Where the catalogue's trusted keys come from: `--trust FILE`, else the trust directory.
enum TrustSource {
    /// `--trust FILE` wins; `--insecure` accepts any signer; otherwise every key in the trust
    /// directory, which must hold at least one.
    static func policy(trust: String?, insecure: Bool, trustDirectory: Setting<String>) throws -> SignedCatalog.Trust {
        if let trust { return .key(try TrustedKey(file: trust)) }
        if insecure { return .insecure }
        let store = try TrustStore(directory: trustDirectory.value)
        guard !store.keys.isEmpty else {
            throw ValidationError("no trusted key: pass --trust <key.pub>, put the key in \(trustDirectory.value) (trust directory, from \(trustDirectory.source)), or pass --insecure to accept any catalogue signer")
        }
        return store.trust
    }

    static func directory(flag: String?, config: HostConfigFile) -> Setting<String> {
        .resolve(flag: flag, flagName: "--trust-dir", file: config.trustDirectory, config: config, default: TrustStore.defaultDirectory)
    }
}

/// `serve` without --trust: the trust store's keys, when it has any (none: any signer, as before).
enum ServeTrust {
    static func storeKeys(trustDir: String?, configFile: ConfigFileOption) throws -> [TrustedKey] {
        let directory = TrustSource.directory(flag: trustDir, config: try configFile.load().file)
        return try TrustStore(directory: directory.value).keys.map(\.key)
    }
}
