import ArgumentParser
import Catalog
import Foundation
import Logging
import StreamServer

struct PublishCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Chunk, compress and sign an appliance directory into a catalogue directory.")

    @Argument(help: "Appliance directory: appliance.json and at least one of kernel, initrd, disk.img, memory.img, vmstate.json (a disk is optional).")
    var appliance: String

    @Option(help: "Catalogue directory to publish into (created if absent).")
    var catalog: String

    @Option(help: "Ed25519 private key file from `streamvm keygen`; without it the catalogue is unsigned.")
    var key: String?

    @Option(help: "Chunk size in KiB (power of two, 4 to 16384).")
    var chunkKiB: Int = PublishOptions.defaultChunkSize / 1024

    @Option(help: "zstd compression level (1 to 22).")
    var level: Int32 = ZstdCompressor.defaultLevel

    @Flag(help: "Do not train a per-appliance zstd dictionary.")
    var noDictionary = false

    @Flag(help: "Replace a version already published with different content.")
    var replace = false

    @Option(help: "Public key file (from keygen) the catalogue delegates access-order models to: the origin that learns (serve --learn-key) then holds that key, never the catalogue's.")
    var modelKey: String?

    @Option(help: "Also write the summary as JSON to this file.")
    var json: String?

    func validate() throws {
        guard (1...22).contains(level) else { throw ValidationError("--level must be 1 to 22") }
    }

    func run() throws {
        let logger = Logger(label: "streamvm.publish")
        let directory = try ApplianceDirectory(path: appliance)
        let signingKey = try key.map { try SigningKey(file: $0) }
        var options = PublishOptions()
        options.chunkSize = chunkKiB * 1024
        options.level = level
        options.trainDictionary = !noDictionary
        options.replace = replace
        options.modelKey = try modelKey.map { try TrustedKey(file: $0) }
        let store = try CatalogDirectory(root: catalog, create: true)
        let bar = TerminalProgressBar(label: "publish \(directory.config.name)")
        let summary = try Publisher(catalog: store, key: signingKey, options: options, logger: logger)
            .publish(directory, progress: bar.handler)
        bar.finish()
        print(summary.line)
        for artifact in summary.artifacts {
            let role = artifact.role.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)
            print("  \(role)" + String(format: " %12d bytes  %6d chunks  %6d zero  ratio %.2f",
                                       artifact.bytes, artifact.chunks, artifact.zeroChunks, artifact.ratio))
        }
        let dictionary = summary.dictionary
        let with = dictionary.ratioWith.map { String(format: "%.2f", $0) } ?? "n/a"
        print("  dictionary: \(dictionary.used ? "used" : "not used"); sample ratio "
              + String(format: "%.2f", dictionary.ratioWithout) + " without, \(with) with (\(dictionary.reason))")
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try encoder.encode(summary), to: json)
        }
    }
}
