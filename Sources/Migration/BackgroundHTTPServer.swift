import Dispatch
import Foundation
import Hummingbird
import HummingbirdHTTP2
import Hypervisor
import Logging
import ServiceLifecycle

/// A Hummingbird application serving cleartext HTTP/2 with prior knowledge (what the stream
/// client's libcurl speaks) in the background, driven from plain threads: the migration's page
/// server on the source and its listener on the destination.
final class BackgroundHTTPServer: Sendable {
    /// Connections still open this long after a shutdown was asked are cancelled.
    static let shutdownGrace: Duration = .seconds(2)

    /// The port the server listens on (the one asked for, or the one the kernel picked for 0).
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    private init(port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.port = port
        self.group = group
        self.task = task
    }

    /// Starts serving `router` on `host:port` and returns once connections are accepted.
    static func start(router: Router<BasicRequestContext>, host: String, port: Int, name: String, logger: Logger) throws -> BackgroundHTTPServer {
        let bound = Locked<Int?>(nil)
        let listening = DispatchSemaphore(value: 0)
        let application = Application(
            router: router,
            server: .plaintextHTTP2(),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: name),
            onServerRunning: { channel in
                bound.withLock { $0 = channel.localAddress?.port ?? port }
                listening.signal()
            },
            logger: logger)
        var configuration = ServiceGroupConfiguration(services: [application], gracefulShutdownSignals: [], logger: logger)
        configuration.maximumGracefulShutdownDuration = shutdownGrace
        let group = ServiceGroup(configuration: configuration)
        let failure = Locked<(any Error)?>(nil)
        let task = Task {
            do {
                try await group.run()
            } catch {
                failure.withLock { $0 = error }
                listening.signal()
                throw error
            }
            listening.signal() // ended before it listened: the wait below must not hang
        }
        listening.wait()
        guard let port = bound.withLock({ $0 }) else {
            let problem = failure.withLock { $0 }.map { "\($0)" } ?? "it stopped before listening"
            throw MigrationError.server("cannot serve \(name) on \(host):\(port): \(problem)")
        }
        return BackgroundHTTPServer(port: port, group: group, task: task)
    }

    /// Stops accepting, lets requests in flight finish (up to `shutdownGrace`), and waits.
    func shutdown() {
        let done = DispatchSemaphore(value: 0)
        let group = self.group, task = self.task
        Task {
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            done.signal()
        }
        done.wait()
    }
}

/// HTTP Bearer credentials of a request, compared in constant time.
extension Request {
    func carriesBearer(_ token: String) -> Bool {
        guard let value = headers[.authorization], value.hasPrefix("Bearer ") else { return false }
        return MigrationToken.matches(value.dropFirst("Bearer ".count), token)
    }
}
