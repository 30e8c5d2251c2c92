import ArgumentParser
import StreamClient

struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Download an appliance completely (verified) into a directory.")

    @Argument(help: "<catalogue-url>/<appliance>[@version]")
    var url: String

    @Argument(help: "Directory to write appliance.json and the artifact files into.")
    var outDir: String

    @Flag(help: "Do not use or fill the chunk cache.")
    var noCache = false

    @OptionGroup var client: ClientOptions

    @OptionGroup var rollback: RollbackOptions

    func run() async throws {
        let logger = commandLogger("streamvm.fetch")
        let (origin, appliance) = try Origin.splitApplianceURL(url)
        let catalogClient = try client.makeClient(primary: [origin], rollback: rollback.protection, logger: logger)
        defer { catalogClient.fetcher.shutdown() }
        let loader = ChunkRouter(client: catalogClient, cache: noCache ? nil : try client.makeCache(logger: logger))
        let bar = TerminalProgressBar(label: "fetch")
        let report = try await ApplianceDownloader(loader: loader, logger: logger).download(appliance, into: outDir, progress: bar.handler)
        bar.finish()
        try printJSON(report)
    }
}
