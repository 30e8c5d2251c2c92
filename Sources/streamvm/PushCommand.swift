import ArgumentParser
import Logging
import StreamServer

struct PushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Upload a local catalogue to a streamvm server (dictionaries, chunks, manifests, then catalog.json).")

    @Argument(help: "Local catalogue directory.")
    var catalog: String

    @Argument(help: "Server URL, e.g. http://origin:8080/")
    var url: String

    @Option(name: .customLong("token-file"), help: "File holding the server's upload token (default: the config's uploadTokenFile).")
    var tokenFile: String?

    @OptionGroup var configFile: ConfigFileOption

    @Option(help: "Parallel connections.")
    var connections = 4

    func run() async throws {
        let logger = Logger(label: "streamvm.push")
        guard let tokenPath = try tokenFile ?? configFile.load().file.uploadTokenFile else {
            throw ValidationError("no upload token: pass --token-file, or set uploadTokenFile in the config file")
        }
        let token = try UploadToken(file: tokenPath)
        let pusher = try CatalogPusher(catalog: catalog, url: url, token: token, connections: connections, logger: logger)
        let summary = try await pusher.push { print($0) }
        print("pushed \(summary.uploaded) objects (\(summary.bytesUploaded) bytes), \(summary.skipped) already on the server")
    }
}
