import ArgumentParser
import Catalog
import Logging
import StreamServer

/// `streamvm learn <appliance>`: learns an access-order model from uploaded traces and publishes it.
struct LearnCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "learn",
        abstract: "Learn an appliance's access-order model from its traces and publish it in the catalogue.")

    @Argument(help: "<appliance>[@version] (default version: the latest).")
    var appliance: String

    @Option(help: "Catalogue directory.")
    var catalog: String

    @Option(help: "Ed25519 private key: the model key the catalogue delegates to (publish --model-key; signs models.json), or the catalogue's own key (signs catalog.json).")
    var key: String?

    @Option(name: .customLong("trace-dir"), help: "Where the server stored traces (default: traces/ beside the catalogue).")
    var traceDirectory: String?

    func run() throws {
        let logger = Logger(label: "streamvm.learn")
        let directory = try CatalogDirectory(root: catalog)
        let publisher = ModelPublisher(catalog: directory, key: try key.map { try SigningKey(file: $0) },
                                       traceRoot: traceDirectory ?? TraceStore.defaultRoot(forCatalog: directory.root), logger: logger)
        try printJSON(try publisher.learn(appliance: appliance))
    }
}
