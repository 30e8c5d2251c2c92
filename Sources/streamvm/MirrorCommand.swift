import ArgumentParser
import Catalog
import StreamClient

struct MirrorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mirror",
        abstract: "Copy a catalogue (or chosen appliances) to a local directory, verified, incremental and resumable.")

    @Argument(help: "Base URL of the catalogue to copy.")
    var originURL: String

    @Argument(help: "Local catalogue directory to fill (serve it with nginx or `streamvm serve`).")
    var catalogDir: String

    @Option(help: "Appliance to copy, as name or name@version (repeatable; default: everything).")
    var appliance: [String] = []

    @OptionGroup var client: ClientOptions

    func run() async throws {
        let logger = commandLogger("streamvm.mirror")
        let catalogClient = try client.makeClient(primary: [try Origin(originURL)], logger: logger)
        defer { catalogClient.fetcher.shutdown() }
        let destination = try CatalogDirectory(root: catalogDir, create: true)
        let mirror = CatalogMirror(client: catalogClient, destination: destination, logger: logger)
        let bar = TerminalProgressBar(label: "mirror")
        let report = try await mirror.run(appliances: appliance, progress: bar.handler)
        bar.finish()
        try printJSON(report)
    }
}
