import ArgumentParser
import Catalog
import Logging
import StreamServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a catalogue over HTTP/2 (h2c and HTTP/1.1 on plaintext, h2 over TLS), with verified reads and token-protected uploads.")

    @Option(help: "Catalogue directory to serve.")
    var catalog: String

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 8080

    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain; with --tls-key, serve h2/HTTP/1.1 over TLS (ALPN).")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(name: .customLong("token-file"), help: "File holding the bearer token that authorises catalogue writes (push); without it they are refused.")
    var tokenFile: String?

    @Option(name: .customLong("trace-token-file"), help: "File holding the bearer token that authorises trace uploads (a different token from --token-file); without it trace uploads are refused.")
    var traceTokenFile: String?

    @Option(help: "Public key file (from keygen): uploaded and served catalog.json must be signed by it.")
    var trust: String?

    @Option(name: .customLong("trust-dir"), help: "Without --trust: catalog.json must be signed by a key in this directory (default: the config's trustDirectory, else /etc/streamvm/trusted.d; no keys there: any signer).")
    var trustDir: String?

    @OptionGroup var configFile: ConfigFileOption

    @Flag(name: .customLong("allow-unsigned"), help: "Accept unsigned catalog.json uploads.")
    var allowUnsigned = false

    @Option(name: .customLong("trace-dir"), help: "Where uploaded traces go (default: traces/ beside the catalogue).")
    var traceDirectory: String?

    @Option(name: .customLong("learn-key"), help: "The model key the catalogue delegates to (publish --model-key): relearn access-order models after new traces and publish them in models.json. (The catalogue key also works, for catalogues without delegation.)")
    var learnKey: String?

    @Option(name: .customLong("stall-timeout"), help: "Seconds after which a connection that makes no progress is closed.")
    var stallTimeout = 30

    @Option(name: .customLong("max-connections"), help: "Open client connections in total; a connection beyond it is closed at accept.")
    var maxConnections = ConnectionLimits().maxConnections

    @Option(name: .customLong("max-connections-per-address"), help: "Open connections from one client IP address; a connection beyond it is closed at accept.")
    var maxConnectionsPerAddress = ConnectionLimits().maxConnectionsPerAddress

    @Option(name: .customLong("head-timeout"), help: "Seconds a connection has to send a complete request head (from accept, and on HTTP/1.1 from the end of the previous response); then it is closed.")
    var headTimeout = Int(ConnectionLimits().headTimeout.components.seconds)

    @Option(name: .customLong("body-timeout"), help: "Seconds an upload body has to arrive completely after its head; then the connection (HTTP/2: the stream) is closed and nothing is stored.")
    var bodyTimeout = Int(ConnectionLimits().bodyTimeout.components.seconds)

    @Option(name: .customLong("cache-mib"), help: "MiB of verified small objects kept in memory.")
    var cacheMiB = 512

    @Option(name: .customLong("scrub-mib-per-second"), help: "Background re-verification rate (0 disables the scrubber).")
    var scrubMiBPerSecond = 32

    @Option(name: .customLong("h2-max-streams"), help: "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection (1-65535).")
    var h2MaxStreams = HTTP2Tuning().maxConcurrentStreams

    @Option(name: .customLong("h2-initial-window"), help: "HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE in bytes for uploads (65535-2147483647).")
    var h2InitialWindow = HTTP2Tuning().initialWindowSize

    @Option(name: .customLong("h2-write-buffer"), help: "Bytes queued for a connection's socket before the server stops reading its requests (4096-67108864).")
    var h2WriteBuffer = HTTP2Tuning().writeBufferBytes

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level '\(logLevel)'") }
        var logger = Logger(label: "streamvm.serve")
        logger.logLevel = level
        var options = CatalogServer.Options(catalog: catalog)
        options.host = host
        options.port = port
        options.tlsCertificate = tlsCertificate
        options.tlsKey = tlsKey
        options.tokenFile = tokenFile
        options.traceTokenFile = traceTokenFile
        options.trustedKey = try trust.map { try TrustedKey(file: $0) }
        if trust == nil { options.trustedKeys = try ServeTrust.storeKeys(trustDir: trustDir, configFile: configFile) }
        options.allowUnsignedUploads = allowUnsigned
        options.traceDirectory = traceDirectory
        options.learningKey = try learnKey.map { try SigningKey(file: $0) }
        options.stallTimeout = .seconds(max(1, stallTimeout))
        guard maxConnections >= 1, maxConnectionsPerAddress >= 1 else {
            throw ValidationError("--max-connections and --max-connections-per-address must be at least 1")
        }
        guard headTimeout >= 1, bodyTimeout >= 1 else { throw ValidationError("--head-timeout and --body-timeout must be at least 1 second") }
        options.connectionLimits.maxConnections = maxConnections
        options.connectionLimits.maxConnectionsPerAddress = maxConnectionsPerAddress
        options.connectionLimits.headTimeout = .seconds(headTimeout)
        options.connectionLimits.bodyTimeout = .seconds(bodyTimeout)
        guard (1...65535).contains(h2MaxStreams) else { throw ValidationError("--h2-max-streams must be 1-65535, not \(h2MaxStreams)") }
        guard (65535...Int(Int32.max)).contains(h2InitialWindow) else {
            throw ValidationError("--h2-initial-window must be 65535-2147483647 bytes, not \(h2InitialWindow)")
        }
        options.http2.maxConcurrentStreams = h2MaxStreams
        options.http2.initialWindowSize = h2InitialWindow
        guard (4096...(64 << 20)).contains(h2WriteBuffer) else { throw ValidationError("--h2-write-buffer must be 4096-67108864 bytes, not \(h2WriteBuffer)") }
        options.http2.writeBufferBytes = h2WriteBuffer
        options.limits.cacheBytes = max(0, cacheMiB) << 20
        options.scrubEnabled = scrubMiBPerSecond > 0
        options.scrub.bytesPerSecond = max(1, scrubMiBPerSecond) << 20
        let server = try CatalogServer(options: options, logger: logger)
        let scheme = tlsCertificate == nil ? "http" : "https"
        let startupLogger = logger
        try await server.run(handleSignals: true) { port in
            startupLogger.notice("serving catalogue", metadata: [
                "catalog": "\(server.store.directory.root)", "url": "\(scheme)://\(host):\(port)/",
                "uploads": "\(tokenFile == nil ? "disabled" : "token")", "traces": "\(traceTokenFile == nil ? "disabled" : "token")",
            ])
        }
    }
}
