import Catalog
import Foundation
import Hummingbird
import NIOCore
import NIOPosix

/// Builds the HTTP answer for reading a verified object: validators, caching headers, ranges and HEAD.
struct ObjectResponses: Sendable {
    /// Content-addressed objects never change under their name, so caches may keep them for a year
    /// (the longest max-age RFC 9111 §5.2.2.1 suggests) without revalidating.
    static let immutableCaching = "public, max-age=31536000, immutable"
    /// catalog.json changes with every publish: caches must revalidate it each time (cheap with ETag).
    static let catalogCaching = "no-cache"
    /// Blocks in which objects too large for the cache are streamed. Each stream holds a few blocks
    /// in flight, so this sets the memory a stream of a large object costs (docs/SERVING.md: 100
    /// streams of a 32 MiB object peaked at 423 MiB with 1 MiB blocks).
    static let fileBlockBytes = 256 << 10

    let threadPool: NIOThreadPool

    func respond(to request: Request, with served: ServableObject) -> Response {
        let etag: String
        if case .memory(let bytes) = served.source {
            etag = Self.entityTag(served.object, bytes: bytes, identity: served.identity)
        } else {
            etag = Self.entityTag(served.object, bytes: nil, identity: served.identity)
        }
        var headers = HTTPFields()
        headers[.eTag] = etag
        headers[.cacheControl] = Self.caching(served.object)
        headers[.contentType] = Self.contentType(served.object)
        headers[.acceptRanges] = "bytes"

        let answer = ObjectAnswer.decide(size: served.size, entityTag: etag, ifNoneMatch: request.headers[.ifNoneMatch],
                                         range: request.headers[.range], ifRange: request.headers[.ifRange])
        let status: HTTPResponse.Status
        switch answer.kind {
        case .notModified: status = .notModified
        case .whole: status = .ok
        case .partial: status = .partialContent
        case .unsatisfiable: status = .rangeNotSatisfiable
        }
        if let contentRange = answer.contentRange { headers[.contentRange] = contentRange }
        guard let slice = answer.slice else { return Response(status: status, headers: headers) }
        headers[.contentLength] = String(slice.length)
        if request.method == .head {
            return Response(status: status, headers: headers)
        }
        return Response(status: status, headers: headers, body: body(served, slice: slice))
    }

    private func body(_ served: ServableObject, slice: ByteRange) -> ResponseBody {
        switch served.source {
        case .memory(let bytes):
            let body = bytes.getSlice(at: bytes.readerIndex + slice.offset, length: slice.length)!
            guard body.readableBytes > Self.fileBlockBytes else { return ResponseBody(byteBuffer: body) }
            // Large bodies go out in blocks so that each completed write shows the stall guard progress.
            return ResponseBody(contentLength: body.readableBytes) { writer in
                var rest = body
                while let block = rest.readSlice(length: min(Self.fileBlockBytes, rest.readableBytes)), block.readableBytes > 0 {
                    try await writer.write(block)
                }
                try await writer.finish(nil)
            }
        case .file(let path):
            let identity = served.identity
            let threadPool = self.threadPool
            return ResponseBody(contentLength: slice.length) { writer in
                var offset = slice.offset
                let end = slice.offset + slice.length
                while offset < end {
                    let length = min(Self.fileBlockBytes, end - offset)
                    let start = offset
                    let block = try await threadPool.runIfActive {
                        try ObjectFileReader.readRange(path: path, offset: start, length: length, expected: identity, allocator: ByteBufferAllocator())
                    }
                    // The file changed after verification: stop rather than send unverified bytes.
                    guard let block else { throw ServerError.unstableFile(path: path) }
                    try await writer.write(block)
                    offset += length
                }
                try await writer.finish(nil)
            }
        }
    }

    /// A strong validator: the object's digest, or for catalog.json a hash of the verified bytes.
    static func entityTag(_ object: CatalogObject, bytes: ByteBuffer?, identity: FileIdentity) -> String {
        if let digest = object.digest { return "\"\(digest.hex)\"" }
        if let bytes {
            let hash = bytes.withUnsafeReadableBytes { Digest.of($0) }
            return "\"\(hash.hex)\""
        }
        return "\"\(identity.inode)-\(identity.size)-\(identity.modifiedNanoseconds)\""
    }

    static func caching(_ object: CatalogObject) -> String {
        object == .catalog ? catalogCaching : immutableCaching
    }

    static func contentType(_ object: CatalogObject) -> String {
        switch object {
        case .catalog, .modelIndex, .manifest, .model: return "application/json"
        case .chunk: return "application/zstd"
        case .dictionary: return "application/octet-stream"
        }
    }
}
