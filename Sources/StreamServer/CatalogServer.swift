import Catalog
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// `streamvm serve`: the catalogue over HTTP/2 (h2c with prior knowledge and HTTP/1.1 on plaintext,
/// h2 or HTTP/1.1 over TLS by ALPN), with verified reads, authenticated uploads, metrics and a
/// background scrubber.
public final class CatalogServer: Sendable {
    public struct Options: Sendable {
        public var catalog: String
        public var host = "127.0.0.1"
        /// 0 picks a free port (tests); the bound port is reported to `run`'s callback.
        public var port = 8080
        public var tlsCertificate: String?
        public var tlsKey: String?
        /// Bearer token for catalogue writes (PUT of objects and catalog.json); nil: writes refused.
        public var tokenFile: String?
        /// Bearer token for trace uploads, a different secret: the many clients that upload traces
        /// must not be able to write the catalogue. nil: trace uploads refused.
        public var traceTokenFile: String?
        public var trustedKey: TrustedKey?
        /// Further signers accepted beside `trustedKey`: the host's trust store when serve has no --trust.
        public var trustedKeys: [TrustedKey] = []
        public var allowUnsignedUploads = false
        public var traceDirectory: String?
        /// The model key the catalogue delegates to (`publish --model-key`), or for a catalogue without
        /// delegation its own signing key: with it, the server relearns an appliance's access-order
        /// model after new traces and publishes it (nil: learning only by `streamvm learn`).
        public var learningKey: SigningKey?
        /// A connection that neither reads nor completes a write for this long is closed.
        public var stallTimeout: Duration = .seconds(30)
        /// Caps on connections and deadlines for request heads and bodies (slowloris, endless uploads).
        public var connectionLimits = ConnectionLimits()
        /// How long a graceful shutdown waits for open connections before cancelling them.
        public var shutdownGrace: Duration = .seconds(5)
        public var limits = VerifiedObjectStore.Limits()
        public var scrub = ObjectScrubber.Pace()
        public var scrubEnabled = true
        /// Accept queue length; sized for benchmark bursts of new connections.
        public var backlog = 1024
        /// HTTP/2 settings advertised to clients (docs/SERVING.md says how they were chosen).
        public var http2 = HTTP2Tuning()

        public init(catalog: String) { self.catalog = catalog }
    }

    public let options: Options
    public let store: VerifiedObjectStore
    public let metrics: ServerMetrics
    private let responder: CatalogResponder
    private let scrubber: ObjectScrubber
    private let logger: Logger
    private let running = Mutex(RunState())

    /// The service group of a running server, or a shutdown asked for before it started.
    private struct RunState: @unchecked Sendable {
        var group: ServiceGroup?
        var shutdownRequested = false
    }

    public init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        let limits = options.connectionLimits
        guard limits.maxConnections >= 1, limits.maxConnectionsPerAddress >= 1, limits.headTimeout > .zero, limits.bodyTimeout > .zero else {
            throw ServerError.invalidOption("connection caps must be at least 1 and the head and body timeouts positive")
        }
        if (options.tlsCertificate == nil) != (options.tlsKey == nil) {
            throw ServerError.invalidOption("--tls-cert and --tls-key go together")
        }
        let directory = try CatalogDirectory(root: options.catalog)
        let metrics = ServerMetrics()
        var uploadPolicy = ObjectUploads.Policy(trustedKey: options.trustedKey, allowUnsigned: options.allowUnsignedUploads)
        uploadPolicy.trustedKeys = options.trustedKeys
        let trust = uploadPolicy.catalogTrust
        let store = VerifiedObjectStore(directory: directory, trust: trust, limits: options.limits, metrics: metrics, logger: logger)
        let token = try options.tokenFile.map { try UploadToken(file: $0) }
        let traceToken = try options.traceTokenFile.map { try UploadToken(file: $0) }
        if let token, let traceToken, token.headerValue == traceToken.headerValue {
            throw ServerError.invalidOption("--trace-token-file holds the same token as --token-file; trace uploaders must not be able to write the catalogue")
        }
        let uploads = ObjectUploads(store: store, policy: uploadPolicy, logger: logger)
        let traces = TraceStore(root: options.traceDirectory ?? TraceStore.defaultRoot(forCatalog: directory.root))
        if traces.root == directory.root || traces.root.hasPrefix(directory.root + "/") {
            throw ServerError.invalidOption("the trace directory \(traces.root) must be outside the catalogue \(directory.root)")
        }
        // A learning key the catalogue neither is signed by nor delegates models to would fail at
        // every burst of traces; say so at the start instead.
        if let key = options.learningKey, let current = try directory.loadCatalog(trust: .insecure),
           current.signer != key.publicKey, current.index.modelSigningKey != key.publicKey {
            throw ServerError.learningKeyMismatch(path: directory.filePath(.catalog))
        }
        self.metrics = metrics
        self.store = store
        let learning = options.learningKey.map { key in
            LearningTrigger(publisher: ModelPublisher(catalog: directory, key: key, traceRoot: traces.root, logger: logger),
                            afterPublish: { store.invalidate(.catalog); store.invalidate(.modelIndex) }, logger: logger)
        }
        var onTraceStored: (@Sendable (String) -> Void)?
        if let learning { onTraceStored = { learning.traceStored(appliance: $0) } }
        self.responder = CatalogResponder(store: store, uploads: uploads, traces: traces, token: token, traceToken: traceToken,
                                          metrics: metrics, onTraceStored: onTraceStored)
        self.scrubber = ObjectScrubber(store: store, pace: options.scrub, metrics: metrics, logger: logger)
    }

    /// Serves until cancelled or, with `handleSignals`, until SIGINT/SIGTERM. `onListening` gets the
    /// bound port once connections are accepted.
    public func run(handleSignals: Bool = false, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(
            responder: responder,
            server: try serverBuilder(),
            configuration: ApplicationConfiguration(address: .hostname(options.host, port: options.port),
                                                    serverName: "streamvm", backlog: options.backlog),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        var services: [any Service] = [app]
        if options.scrubEnabled { services.append(ScrubberService(scrubber: scrubber)) }
        var configuration = ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
            logger: logger)
        // Clients that keep idle connections open (libcurl does) would otherwise hold the shutdown
        // until the idle timeout; past this grace the remaining connections are cancelled.
        configuration.maximumGracefulShutdownDuration = options.shutdownGrace
        let group = ServiceGroup(configuration: configuration)
        let shutdownAlreadyAsked = running.withLock { state in
            state.group = group
            return state.shutdownRequested
        }
        if shutdownAlreadyAsked { await group.triggerGracefulShutdown() }
        try await group.run()
    }

    /// Stops the server gracefully: no new connections, open ones finish their requests, then `run`
    /// returns. Prefer this to cancelling the task that runs the server: cancelling it while an
    /// accepted connection is still queued traps in swift-nio ("Deinited NIOAsyncWriter without
    /// calling finish()", apple/swift-nio#3481). Safe to call before `run` starts or more than once.
    public func shutdown() async {
        let group = running.withLock { state -> ServiceGroup? in
            state.shutdownRequested = true
            return state.group
        }
        await group?.triggerGracefulShutdown()
    }

    /// Plaintext: h2c or HTTP/1.1 chosen per connection; TLS: ALPN chooses. Both guarded by
    /// `ConnectionLimits` and the stall timeout (`GuardedChannel`). On
    /// HTTP/2, reads of cached verified objects are answered on the event loop (`ObjectFastPathHandler`);
    /// everything else, and all of HTTP/1.1, goes to the responder.
    private func serverBuilder() throws -> HTTPServerBuilder {
        let guards = ConnectionGuards(limits: options.connectionLimits, stallTimeout: options.stallTimeout, metrics: metrics, logger: logger)
        let connectionConfiguration = HTTP1Channel.Configuration(additionalChannelHandlers: [guards.requestLimits(.http1)],
                                                                 idleTimeout: guards.stallTimeout)
        let streamConfiguration = HTTP1Channel.Configuration(idleTimeout: guards.stallTimeout)
        let tuning = options.http2, store = self.store, metrics = self.metrics
        @Sendable func channels(_ responder: @escaping HTTPChannelHandler.Responder) -> (HTTP1Channel, HTTP2ConnectionChannel) {
            (HTTP1Channel(responder: responder, configuration: connectionConfiguration),
             HTTP2ConnectionChannel(responder: responder, configuration: streamConfiguration, tuning: tuning, store: store, metrics: metrics,
                                    guards: guards))
        }
        if let certificate = options.tlsCertificate, let key = options.tlsKey {
            let tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            // Built once here so that a bad certificate or key fails at start, not per connection.
            _ = try NIOSSLContext(configuration: tls)
            return HTTPServerBuilder { responder in
                let (http1, http2) = channels(responder)
                return GuardedChannel(try TLSHTTPChannel(tls: tls, http1: http1, http2: http2), guards: guards)
            }
        }
        return HTTPServerBuilder { responder in
            let (http1, http2) = channels(responder)
            return GuardedChannel(PlaintextHTTPChannel(http1: http1, http2: http2), guards: guards)
        }
    }
}
