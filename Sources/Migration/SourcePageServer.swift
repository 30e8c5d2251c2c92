import Dispatch
import Foundation
import Hummingbird
import Hypervisor
import Logging
import NIOCore

/// Serves a paused machine's memory to one destination for the length of a migration: batch `b` at
/// `GET /v1/migration/<page token>/pages/<b>` (its data pages, in order); the destination's claim
/// just before it starts the machine, `POST /v1/migration/<page token>/claim`, granted once and
/// never after the source gave up (so the guest never runs on both hosts); and its notice that it
/// holds every page, `POST /v1/migration/<page token>/complete`. Any other path,
/// or a wrong token, is 404: the page token is the only credential, and it is fresh per migration.
final class SourcePageServer: Sendable {
    /// What the destination said when it had every page.
    struct Completion: Codable, Sendable {
        /// Data pages the destination installed, by demand faults and the background transfer.
        var pagesInstalled: Int
        /// Of those, pages the guest faulted on before the background transfer brought them.
        var pagesOnDemand: Int
    }

    /// Who owns the machine: nobody yet, the destination (claimed), or the source again (aborted).
    enum Ownership: Sendable {
        case open, claimed, aborted
    }

    struct Counters: Sendable {
        var batchesServed = 0
        var bytesServed = 0
    }

    /// The completion notice is a few bytes; anything bigger is not one.
    static let maximumNoticeBytes = 4096

    let pagesURL: String
    private let server: BackgroundHTTPServer
    private let counters: Locked<Counters>
    private let completion: Locked<Completion?>
    private let completed: DispatchSemaphore
    private let ownership: Locked<Ownership>

    private init(pagesURL: String, server: BackgroundHTTPServer, counters: Locked<Counters>, completion: Locked<Completion?>, completed: DispatchSemaphore,
                 ownership: Locked<Ownership>) {
        self.ownership = ownership
        self.pagesURL = pagesURL
        self.server = server
        self.counters = counters
        self.completion = completion
        self.completed = completed
    }

    /// Starts serving `memory` (which must not change until `shutdown`) on `host:port` (0: any port).
    static func start(memory: GuestMemory, batches: PageBatches, host: String, port: Int, logger: Logger) throws -> SourcePageServer {
        let token = MigrationToken.makePageToken()
        let counters = Locked(Counters())
        let completion = Locked<Completion?>(nil)
        let completed = DispatchSemaphore(value: 0)
        let ownership = Locked(Ownership.open)
        let pageSize = GuestMemory.pageSize
        let router = Router(context: BasicRequestContext.self)
        router.get("/v1/migration/:token/pages/:batch") { _, context -> Response in
            guard let given = context.parameters.get("token"), MigrationToken.matches(given[...], token) else { return Response(status: .notFound) }
            guard let text = context.parameters.get("batch"), text.utf8.count <= 12, let batch = Int(text), (0..<batches.batchCount).contains(batch) else {
                return Response(status: .badRequest, body: ResponseBody(byteBuffer: ByteBuffer(string: "batch must be 0...\(batches.batchCount - 1)\n")))
            }
            let pages = batches.dataPages(ofBatch: batch)
            var body = ByteBuffer()
            body.reserveCapacity(pages.count * pageSize)
            for page in pages {
                body.writeBytes(UnsafeRawBufferPointer(start: memory.hostAddress(ofPage: page), count: pageSize))
            }
            counters.withLock {
                $0.batchesServed += 1
                $0.bytesServed += body.readableBytes
            }
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody(byteBuffer: body))
        }
        router.post("/v1/migration/:token/claim") { _, context -> Response in
            guard let given = context.parameters.get("token"), MigrationToken.matches(given[...], token) else { return Response(status: .notFound) }
            let granted = ownership.withLock { value -> Bool in
                if value == .open { value = .claimed }
                return value == .claimed
            }
            guard granted else {
                return Response(status: .conflict, body: ResponseBody(byteBuffer: ByteBuffer(string: "the source gave up on this migration and runs the machine itself\n")))
            }
            return Response(status: .noContent)
        }
        router.post("/v1/migration/:token/complete") { request, context -> Response in
            guard let given = context.parameters.get("token"), MigrationToken.matches(given[...], token) else { return Response(status: .notFound) }
            let bytes = try await request.body.collect(upTo: maximumNoticeBytes)
            guard let notice = try? JSONDecoder().decode(Completion.self, from: Data(buffer: bytes)) else {
                return Response(status: .badRequest, body: ResponseBody(byteBuffer: ByteBuffer(string: "the body must be {\"pagesInstalled\": N, \"pagesOnDemand\": M}\n")))
            }
            let first = completion.withLock { value -> Bool in
                guard value == nil else { return false }
                value = notice
                return true
            }
            if first { completed.signal() }
            return Response(status: .noContent)
        }
        let server = try BackgroundHTTPServer.start(router: router, host: host, port: port, name: "streamvm-migration-source", logger: logger)
        let hostInURL = host.contains(":") ? "[\(host)]" : host
        return SourcePageServer(pagesURL: "http://\(hostInURL):\(server.port)/v1/migration/\(token)", server: server,
                                counters: counters, completion: completion, completed: completed, ownership: ownership)
    }

    /// Waits until the destination says it holds every page, or `timeout` passes (nil).
    func waitForCompletion(timeout: Duration) -> Completion? {
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        guard completed.wait(timeout: .now() + .nanoseconds(Int(nanoseconds))) == .success else { return nil }
        return completion.withLock { $0 }
    }

    /// Takes the machine back unless the destination has claimed it: true when the source may
    /// resume it; false when the destination may be running it already.
    func abort() -> Bool {
        ownership.withLock { value -> Bool in
            if value == .open { value = .aborted }
            return value == .aborted
        }
    }

    var served: Counters { counters.withLock { $0 } }

    func shutdown() { server.shutdown() }
}
