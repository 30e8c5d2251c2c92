import ArgumentParser
import Catalog
import Foundation

/// `streamvm config`: the settings every command would use here, and where each came from
/// (default, the config file, or a flag), with the trusted keys found in the trust directory.
/// Takes the same flags as the commands, so `streamvm config --cache-dir X` shows their effect.
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the effective settings (cache, origins, tokens, runtime and trust directories) and where each came from.",
        discussion: "Precedence: default < config file (--config, $STREAMVM_CONFIG or /etc/streamvm/config.json) < flag.")

    @OptionGroup var client: ClientOptions

    @OptionGroup var runtime: RuntimeDirectoryOption

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct Entry: Encodable {
        var setting: String
        var value: String
        var source: String
    }

    func run() throws {
        let settings = try client.resolved()
        let config = settings.config
        func fileOrUnset(_ value: String?) -> (String, String) {
            guard let value, let path = config.path else { return ("-", "unset") }
            return (value, path)
        }
        var entries = [
            Entry(setting: "config file", value: config.path ?? "- (\(HostConfigFile.defaultPath) absent)", source: settings.configSource),
            Entry(setting: "cache directory", value: settings.cacheDirectory.value, source: settings.cacheDirectory.source),
            Entry(setting: "cache size", value: settings.cacheSize.value, source: settings.cacheSize.source),
            Entry(setting: "origins", value: settings.origins.value.isEmpty ? "-" : settings.origins.value.joined(separator: " "), source: settings.origins.source),
        ]
        let upload = fileOrUnset(config.uploadTokenFile), trace = fileOrUnset(config.traceTokenFile)
        entries.append(Entry(setting: "upload token file", value: upload.0, source: upload.1))
        entries.append(Entry(setting: "trace token file", value: trace.0, source: trace.1))
        let runtimeDirectory = runtime.resolve(config)
        entries.append(Entry(setting: "runtime directory", value: runtimeDirectory.value, source: runtimeDirectory.source))
        entries.append(Entry(setting: "trust directory", value: settings.trustDirectory.value, source: settings.trustDirectory.source))
        if let trust = client.trust {
            entries.append(Entry(setting: "trusted key", value: try TrustedKey(file: trust).base64, source: "--trust \(trust)"))
        } else if client.insecure {
            entries.append(Entry(setting: "trusted key", value: "any signer", source: "--insecure"))
        } else {
            // A bad store is an error here too: `config` is where an operator checks it.
            let store = try TrustStore(directory: settings.trustDirectory.value)
            if store.keys.isEmpty {
                entries.append(Entry(setting: "trusted key", value: "- (none: commands need --trust or --insecure)", source: settings.trustDirectory.value))
            }
            for (file, key) in store.keys {
                entries.append(Entry(setting: "trusted key", value: key.base64, source: file))
            }
        }
        if json {
            try printJSON(entries)
            return
        }
        let width = entries.map(\.setting.count).max() ?? 0
        let valueWidth = min(60, entries.map(\.value.count).max() ?? 0)
        for entry in entries {
            let name = entry.setting.padding(toLength: width, withPad: " ", startingAt: 0)
            let value = entry.value.count >= valueWidth ? entry.value : entry.value.padding(toLength: valueWidth, withPad: " ", startingAt: 0)
            print("\(name)  \(value)  (\(entry.source))")
        }
    }
}
