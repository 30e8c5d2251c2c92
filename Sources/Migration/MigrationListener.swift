import Dispatch
import Foundation
import Hummingbird
import Hypervisor
import Logging
import NIOCore
import StreamClient

/// The destination's side (`streamvm run --incoming`): listens for one migration offer
/// (`POST /v1/migrations`, with the listener's bearer token), builds the machine from the offered
/// state with the caller's configuration (the same appliance, as QEMU's `-incoming` needs the same
/// command line), brings its memory over as the offer's mode says, claims the machine from the source,
/// starts it, and answers the source. A post-copy destination then fetches the rest in the background
/// and tells the source when it holds every page.
public final class MigrationListener: @unchecked Sendable {
    public static let offerPath = "/v1/migrations"

    public struct Options: Sendable {
        public var host: String
        public var port: Int
        /// The bearer token a source must present (`MigrationToken.read(file:)`).
        public var token: String
        /// Batch requests the background transfer keeps in flight. 0: none (pages come only when the
        /// guest faults on them, and the source is never told it may free its copy): a diagnostic
        /// mode that shows the demand path alone, not for use.
        public var backgroundStreams = 4
        /// Threads serving guest page faults (each may wait for the network).
        public var faultThreads = 2
        /// How long a page may stay unreachable (link down, source gone) before the machine is stopped.
        public var linkLossToleranceSeconds = 10.0
        /// Notifying the source that every page is here is retried this long.
        public var completionNoticeSeconds = 30.0

        public init(host: String, port: Int, token: String) {
            self.host = host
            self.port = port
            self.token = token
        }
    }

    /// The offer that arrived and the answer its request waits for.
    private struct Arrival {
        let offer: MigrationOffer
        let answer: @Sendable (Result<Void, any Error>) -> Void
    }

    private enum Slot {
        case waiting
        case arrived(Arrival)
        case taken
    }

    public let options: Options
    public var port: Int { server.port }
    private let logger: Logger
    private let fetcher: Fetcher
    private var server: BackgroundHTTPServer!
    private let slot = Locked(Slot.waiting)
    private let arrived = DispatchSemaphore(value: 0)

    /// Starts listening; returns once the port accepts connections.
    public init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        var configuration = Fetcher.Configuration()
        configuration.stallTimeoutSeconds = options.linkLossToleranceSeconds
        fetcher = try Fetcher(configuration: configuration, logger: logger)
        let router = Router(context: BasicRequestContext.self)
        let token = options.token, slot = self.slot, arrived = self.arrived
        router.post(RouterPath(Self.offerPath)) { request, _ -> Response in
            guard request.carriesBearer(token) else {
                return Response(status: .unauthorized, body: ResponseBody(byteBuffer: ByteBuffer(string: "a migration offer needs the listener's token (Authorization: Bearer)\n")))
            }
            let offer: MigrationOffer
            do {
                let body = try await request.body.collect(upTo: MigrationOffer.maximumBytes)
                offer = try MigrationOffer.decode(Data(buffer: body))
            } catch {
                return Response(status: .badRequest, body: ResponseBody(byteBuffer: ByteBuffer(string: "\(error)\n")))
            }
            let result: Result<Void, any Error> = await withCheckedContinuation { continuation in
                let taken = slot.withLock { value -> Bool in
                    guard case .waiting = value else { return true }
                    value = .arrived(Arrival(offer: offer, answer: { continuation.resume(returning: $0) }))
                    return false
                }
                if taken { continuation.resume(returning: .failure(MigrationError.badRequest("this listener has taken a machine already"))) } else { arrived.signal() }
            }
            switch result {
            case .success:
                return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: "{\"running\":true}\n")))
            case .failure(let error):
                return Response(status: .conflict, body: ResponseBody(byteBuffer: ByteBuffer(string: "\(error)\n")))
            }
        }
        server = try BackgroundHTTPServer.start(router: router, host: options.host, port: options.port, name: "streamvm-migration-listener", logger: logger)
    }

    /// Waits (up to `timeout`, nil: for ever) for a migration, builds its machine with `makeMachine`
    /// from the restore plan (lazy memory from the source), brings memory over per the mode, claims
    /// the machine and starts it. Throws, and the source keeps its machine, when any step fails.
    public func accept(timeout: Duration?, makeMachine: (RestorePlan) throws -> Machine) throws -> IncomingMigration {
        let deadline: DispatchTime = timeout.map { .now() + .nanoseconds(Int($0.components.seconds * 1_000_000_000 + $0.components.attoseconds / 1_000_000_000)) } ?? .distantFuture
        guard arrived.wait(timeout: deadline) == .success else {
            throw MigrationError.incomplete("no migration arrived at port \(port) within \(timeout.map { "\($0)" } ?? "ever")")
        }
        guard case .arrived(let arrival) = slot.withLock({ value -> Slot in defer { value = .taken }; return value }) else {
            throw MigrationError.server("the migration listener lost its offer")
        }
        let offer = arrival.offer
        do {
            let incoming = try receive(offer, makeMachine: makeMachine)
            arrival.answer(.success(()))
            incoming.startBackgroundTransfer()
            return incoming
        } catch {
            arrival.answer(.failure(error))
            throw error
        }
    }

    private func receive(_ offer: MigrationOffer, makeMachine: (RestorePlan) throws -> Machine) throws -> IncomingMigration {
        let batches = PageBatches(image: offer.state.memory, pagesPerBatch: offer.pagesPerBatch)
        let source = RemotePageSource(batches: batches, pagesURL: offer.pagesURL, fetcher: fetcher, linkLossToleranceSeconds: options.linkLossToleranceSeconds)
        let plan = RestorePlan(state: offer.state, pages: source, loading: .lazy, fetchThreads: options.faultThreads)
        let machine = try makeMachine(plan)
        guard let handler = machine.pageFaultHandler else { throw MigrationError.server("the machine was not built from the offered restore plan") }
        let transfer = BackgroundTransfer(handler: handler, batches: batches, order: batches.batchesWithData(), streams: options.backgroundStreams)
        let incoming = IncomingMigration(machine: machine, mode: offer.mode, source: source, transfer: transfer, pagesURL: offer.pagesURL,
                                         noticeSeconds: options.completionNoticeSeconds, logger: logger)
        if offer.mode == .stopAndCopy {
            try transfer.run()
        }
        try claim(offer.pagesURL)
        try machine.start()
        incoming.markStarted()
        return incoming
    }

    /// Takes ownership of the machine from the source, which grants it once and never after giving up.
    private func claim(_ pagesURL: String) throws {
        let answer = try HTTPPost(url: pagesURL + "/claim", body: Data(), mode: .h2cPriorKnowledge, timeoutSeconds: 30).perform()
        guard answer.status == 204 else { throw MigrationError.incomplete("the source did not hand the machine over (HTTP \(answer.status)): \(answer.summary)") }
    }

    /// Stops listening (a running incoming machine is not affected) and closes the fetcher once the
    /// machine no longer needs it: call after the machine stopped.
    public func shutdown() {
        server.shutdown()
        fetcher.shutdown()
    }
}
