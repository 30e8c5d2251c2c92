import Catalog
import Hummingbird
import Logging
import NIOCore
import NIOPosix

/// Answers every request of `streamvm serve`: reads of catalogue objects, health and metrics, and
/// authenticated writes. Dispatch is a parse of the raw target, not a router, so the read path does
/// no more work than it must.
public struct CatalogResponder: HTTPResponder {
    public typealias Context = BasicRequestContext

    let store: VerifiedObjectStore
    let uploads: ObjectUploads
    let traces: TraceStore
    /// nil: writes are disabled (no --token-file).
    let token: UploadToken?
    /// nil: trace uploads are disabled (no --trace-token-file). Never the write token.
    let traceToken: UploadToken?
    let metrics: ServerMetrics
    let objectResponses: ObjectResponses
    /// Hears of every stored trace (automatic learning); nil when the server does not learn.
    let onTraceStored: (@Sendable (String) -> Void)?

    public init(store: VerifiedObjectStore, uploads: ObjectUploads, traces: TraceStore, token: UploadToken?,
                traceToken: UploadToken? = nil, metrics: ServerMetrics, threadPool: NIOThreadPool = .singleton,
                onTraceStored: (@Sendable (String) -> Void)? = nil) {
        self.onTraceStored = onTraceStored
        self.store = store
        self.uploads = uploads
        self.traces = traces
        self.token = token
        self.traceToken = traceToken
        self.metrics = metrics
        self.objectResponses = ObjectResponses(threadPool: threadPool)
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let start = ContinuousClock.now
        let target = request.head.path ?? ""
        let response: Response
        do {
            response = try await dispatch(request, target: target, logger: context.logger)
        } catch {
            context.logger.error("request failed", metadata: ["target": "\(target.prefix(120))", "error": "\(error)"])
            response = Self.plain(.internalServerError, "internal error\n")
        }
        let bodyBytes = request.method == .head ? 0 : (response.body.contentLength ?? 0)
        metrics.recordRequest(method: Self.methodLabel(request.method), status: response.status.code,
                              bodyBytes: bodyBytes, duration: ContinuousClock.now - start)
        if context.logger.logLevel <= .debug {
            context.logger.debug("request", metadata: [
                "method": "\(request.method)", "target": "\(target.prefix(120))",
                "status": "\(response.status.code)", "bytes": "\(bodyBytes)",
            ])
        }
        return response
    }

    private func dispatch(_ request: Request, target: String, logger: Logger) async throws -> Response {
        let parsed: RequestTarget
        switch RequestTarget.parse(target) {
        case .success(let value): parsed = value
        case .failure(.malformed(let why)): return Self.plain(.badRequest, why + "\n")
        case .failure(.notFound): return Self.plain(.notFound, "not found\n")
        }
        switch (parsed, request.method) {
        case (.object(let object), .get), (.object(let object), .head):
            return try await read(object, request: request, logger: logger)
        case (.object(let object), .put):
            return try await write(object, request: request, logger: logger)
        case (.trace(let appliance), .post):
            return try await storeTrace(appliance, request: request, logger: logger)
        case (.health, .get), (.health, .head):
            return Self.plain(.ok, "ok\n", head: request.method == .head)
        case (.metrics, .get):
            metrics.recordCacheBytes(store.cachedBytes)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        default:
            var headers = HTTPFields()
            headers[.allow] = Self.allowedMethods(parsed)
            return Response(status: .methodNotAllowed, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: "method not allowed\n")))
        }
    }

    private func read(_ object: CatalogObject, request: Request, logger: Logger) async throws -> Response {
        switch try await store.lookup(object) {
        case .servable(let served):
            return objectResponses.respond(to: request, with: served)
        case .missing:
            return Self.plain(.notFound, "not found\n")
        case .corrupt(let reason):
            metrics.recordError("corrupt_object")
            logger.error("refused to serve a corrupt object", metadata: ["object": "\(object.path)", "problem": "\(reason)"])
            return Self.plain(.internalServerError, "stored object failed verification; the operator has been told\n")
        }
    }

    private func write(_ object: CatalogObject, request: Request, logger: Logger) async throws -> Response {
        if let refusal = authorize(request, with: token, purpose: .catalogueWrites) { return refusal }
        let limit = uploads.maximumBodyBytes(object)
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            return tooLarge("\(object.path) may be at most \(limit) bytes\n")
        }
        var request = request
        let body: ByteBuffer
        do { body = try await request.collectBody(upTo: limit) } catch is NIOTooManyBytesError {
            return tooLarge("\(object.path) may be at most \(limit) bytes\n")
        }
        switch try await uploads.put(object, body: body) {
        case .stored:
            metrics.recordUpload(bytes: body.readableBytes)
            return Self.plain(.created, "stored \(object.path)\n")
        case .alreadyPresent:
            return Self.plain(.ok, "already present \(object.path)\n")
        case .rejected(let why):
            metrics.recordError("upload_rejected")
            logger.warning("rejected upload", metadata: ["object": "\(object.path)", "problem": "\(why)"])
            return Self.plain(.badRequest, why + "\n")
        case .conflict(let why):
            metrics.recordError("upload_rejected")
            logger.warning("rejected catalogue upload", metadata: ["problem": "\(why)"])
            return Self.plain(.conflict, why + "\n")
        }
    }

    private func storeTrace(_ appliance: String, request: Request, logger: Logger) async throws -> Response {
        if let refusal = authorize(request, with: traceToken, purpose: .traceUploads) { return refusal }
        let limit = TraceStore.maximumTraceBytes
        var request = request
        let body: ByteBuffer
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            return tooLarge("a trace may be at most \(limit) bytes\n")
        }
        do { body = try await request.collectBody(upTo: limit) } catch is NIOTooManyBytesError {
            return tooLarge("a trace may be at most \(limit) bytes\n")
        }
        switch try await traces.store(appliance: appliance, body: body) {
        case .stored(let name):
            logger.info("stored trace", metadata: ["trace": "\(name)", "bytes": "\(body.readableBytes)"])
            onTraceStored?(appliance)
            return Self.plain(.created, "stored trace \(name)\n")
        case .rejected(let why):
            metrics.recordError("upload_rejected")
            return Self.plain(.badRequest, why + "\n")
        }
    }

    /// 413 for an upload over its cap, declared or found while reading. Nothing was stored (bodies
    /// are collected in memory and verified before anything is written). `Connection: close` makes
    /// `HTTPRequestLimits` close the connection (HTTP/2: reset the stream) after the answer instead of
    /// reading and discarding the rest of a body that may never end.
    private func tooLarge(_ text: String) -> Response {
        metrics.recordError("upload_too_large")
        var response = Self.plain(.contentTooLarge, text)
        response.headers[.connection] = "close"
        return response
    }

    /// What a token authorises: each has its own secret, so a trace uploader cannot write the catalogue.
    enum TokenPurpose {
        case catalogueWrites, traceUploads

        var option: String { self == .catalogueWrites ? "--token-file" : "--trace-token-file" }
        var what: String { self == .catalogueWrites ? "catalogue writes" : "trace uploads" }
    }

    /// nil when the request carries `token`; otherwise the refusal to send.
    private func authorize(_ request: Request, with token: UploadToken?, purpose: TokenPurpose) -> Response? {
        guard let token else {
            return Self.plain(.forbidden, "\(purpose.what) are disabled: the server was started without \(purpose.option)\n")
        }
        switch token.check(authorization: request.headers[.authorization]) {
        case .accepted:
            return nil
        case .missing:
            var response = Self.plain(.unauthorized, "\(purpose.what) need 'Authorization: Bearer <token>'\n")
            response.headers[.wwwAuthenticate] = "Bearer realm=\"streamvm\""
            return response
        case .wrong:
            return Self.plain(.forbidden, "the token is not valid for \(purpose.what)\n")
        }
    }

    static func plain(_ status: HTTPResponse.Status, _ text: String, head: Bool = false) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-store"
        if head {
            headers[.contentLength] = String(text.utf8.count)
            return Response(status: status, headers: headers)
        }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    private static func allowedMethods(_ target: RequestTarget) -> String {
        switch target {
        case .object: return "GET, HEAD, PUT"
        case .health: return "GET, HEAD"
        case .metrics: return "GET"
        case .trace: return "POST"
        }
    }

    /// Methods as metric labels; anything unusual is folded into one label so hostile clients cannot
    /// create unbounded label sets.
    static func methodLabel(_ method: HTTPRequest.Method) -> String {
        switch method {
        case .get: return "GET"
        case .head: return "HEAD"
        case .put: return "PUT"
        case .post: return "POST"
        default: return "OTHER"
        }
    }
}
