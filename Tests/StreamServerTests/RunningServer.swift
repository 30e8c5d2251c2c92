import Catalog
import Foundation
import Logging
@testable import StreamServer

/// A `CatalogServer` on an ephemeral loopback port for one test, stopped by cancelling its task.
final class RunningServer: @unchecked Sendable {
    let server: CatalogServer
    let port: Int
    private let task: Task<Void, any Error>

    var baseURL: String { "http://127.0.0.1:\(port)" }

    static func start(catalogue: TestCatalogue, configure: (inout CatalogServer.Options) -> Void = { _ in }) async throws -> RunningServer {
        var options = CatalogServer.Options(catalog: catalogue.directory.root)
        options.port = 0
        options.scrubEnabled = false
        options.traceDirectory = catalogue.base + "/traces"
        // The 10 s request-head deadline closed test connections when the suite's VM tests starved
        // the server's threads at the start of a full run; tests of the deadline set their own.
        options.connectionLimits.headTimeout = .seconds(120)
        configure(&options)
        var logger = Logger(label: "test.server")
        logger.logLevel = .critical
        let server = try CatalogServer(options: options, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        // Off the cooperative pool (see DedicatedThreadsExecutor); child tasks inherit the preference.
        let task = Task(executorPreference: DedicatedThreadsExecutor.shared) {
            try await server.run { port in continuation.yield(port) }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        return RunningServer(server: server, port: port, task: task)
    }

    private init(server: CatalogServer, port: Int, task: Task<Void, any Error>) {
        self.server = server
        self.port = port
        self.task = task
    }

    func stop() async {
        await server.shutdown()
        _ = try? await task.value
    }
}

/// Writes a token file for a test catalogue and returns its path and value.
func makeTokenFile(in catalogue: TestCatalogue, token: String = "test-token-0123456789abcdef", name: String = "token") throws -> (path: String, token: String) {
    let path = catalogue.base + "/" + name
    try token.write(toFile: path, atomically: true, encoding: .utf8)
    return (path, token)
}
