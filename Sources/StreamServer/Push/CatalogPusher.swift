import Catalog
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// `streamvm push`: copies a local catalogue to a `streamvm serve` over HTTP. Objects go in dependency
/// order (dictionaries, chunks, manifests, models, catalog.json, then models.json), so the server never holds a
/// catalogue that names something it lacks; objects the server already has (HEAD 200) are skipped.
public struct CatalogPusher: Sendable {
    public struct Summary: Sendable, Equatable {
        public var uploaded = 0
        public var skipped = 0
        public var bytesUploaded = 0
    }

    let directory: CatalogDirectory
    let host: String
    let port: Int
    /// Path prefix under which the server exposes the catalogue ("" for the root).
    let basePath: String
    let token: UploadToken
    let connections: Int
    let logger: Logger

    /// Parses `http://host[:port][/prefix]`.
    public init(catalog: String, url: String, token: UploadToken, connections: Int = 4, logger: Logger) throws {
        guard let parsed = URLComponents(string: url), parsed.scheme == "http", let host = parsed.host, !host.isEmpty else {
            throw ServerError.invalidOption("\(url): push needs an http://host[:port][/prefix] URL (run the push next to a TLS terminator, or on the plaintext port)")
        }
        directory = try CatalogDirectory(root: catalog)
        self.host = host
        port = parsed.port ?? 80
        var prefix = parsed.percentEncodedPath
        while prefix.hasSuffix("/") { prefix.removeLast() }
        basePath = prefix
        self.token = token
        self.connections = max(1, min(connections, 32))
        self.logger = logger
    }

    public func push(progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> Summary {
        var summary = Summary()
        let phases: [[CatalogObject]] = [
            directory.objects(of: .dictionary), directory.objects(of: .chunk),
            directory.objects(of: .manifest), directory.objects(of: .model),
        ]
        for objects in phases where !objects.isEmpty {
            let part = try await pushInParallel(objects)
            summary.uploaded += part.uploaded
            summary.skipped += part.skipped
            summary.bytesUploaded += part.bytesUploaded
            progress("\(objects[0].kind!.rawValue): \(part.uploaded) uploaded, \(part.skipped) already present")
        }
        // catalog.json, then models.json: the server accepts a model index only from the key the
        // catalogue it holds delegates models to.
        for object in [CatalogObject.catalog, .modelIndex] where directory.contains(object) {
            let part = try await pushInParallel([object])
            summary.uploaded += part.uploaded
            summary.skipped += part.skipped
            summary.bytesUploaded += part.bytesUploaded
            progress("\(object.path): \(part.uploaded == 1 ? "uploaded" : "already current")")
        }
        return summary
    }

    /// Splits `objects` over up to `connections` connections; each pushes its share in order.
    private func pushInParallel(_ objects: [CatalogObject]) async throws -> Summary {
        let workers = min(connections, objects.count)
        return try await withThrowingTaskGroup(of: Summary.self) { group in
            for worker in 0..<workers {
                let share = stride(from: worker, to: objects.count, by: workers).map { objects[$0] }
                group.addTask { try await pushSequentially(share) }
            }
            var total = Summary()
            for try await part in group {
                total.uploaded += part.uploaded
                total.skipped += part.skipped
                total.bytesUploaded += part.bytesUploaded
            }
            return total
        }
    }

    private func pushSequentially(_ objects: [CatalogObject]) async throws -> Summary {
        try await HTTP1Connection.with(host: host, port: port) { connection in
            var summary = Summary()
            for object in objects {
                let path = basePath + "/" + object.path
                let data = try directory.read(object)
                let probe = try await connection.send(.HEAD, path: path)
                if probe.status == 200, object != .catalog || probe.headers.first(name: "ETag") == "\"\(Digest.of(data).hex)\"" {
                    summary.skipped += 1
                    continue
                }
                let reply = try await connection.send(.PUT, path: path, headers: [("Authorization", token.headerValue), ("Content-Type", "application/octet-stream")],
                                                      body: ByteBuffer(data: data))
                switch reply.status {
                case 200: summary.skipped += 1
                case 201: summary.uploaded += 1; summary.bytesUploaded += data.count
                default:
                    throw ServerError.uploadFailed(object: object.path, status: reply.status, message: reply.text.trimmingCharacters(in: .whitespacesAndNewlines))
                }
                logger.debug("pushed", metadata: ["object": "\(object.path)", "status": "\(reply.status)"])
            }
            return summary
        }
    }
}
