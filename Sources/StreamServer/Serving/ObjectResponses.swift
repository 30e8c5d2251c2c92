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
    /// Blocks in which objects too large for memory are streamed.
    static let fileBlockBytes = 1 << 20

    let threadPool: NIOThreadPool

    func respond(to request: Request, with served: ServableObject) -> Response {
        let etag = entityTag(served)
        var headers = HTTPFields()
        headers[.eTag] = etag
        headers[.cacheControl] = served.object == .catalog ? Self.catalogCaching : Self.immutableCaching
        headers[.contentType] = Self.contentType(served.object)
        headers[.acceptRanges] = "bytes"

        if let match = request.headers[.ifNoneMatch], Self.matches(match, etag: etag) {
            return Response(status: .notModified, headers: headers)
        }
        var range = ByteRange.parse(request.headers[.range], size: served.size)
        if let ifRange = request.headers[.ifRange], ifRange != etag { range = .whole }

        let status: HTTPResponse.Status
        let slice: ByteRange
        switch range {
        case .whole:
            status = .ok
            slice = ByteRange(offset: 0, length: served.size)
        case .partial(let requested):
            status = .partialContent
            slice = requested
            headers[.contentRange] = "bytes \(requested.offset)-\(requested.lastByte)/\(served.size)"
        case .unsatisfiable:
            headers[.contentRange] = "bytes */\(served.size)"
            return Response(status: .rangeNotSatisfiable, headers: headers)
        }
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
    private func entityTag(_ served: ServableObject) -> String {
        if let digest = served.object.digest { return "\"\(digest.hex)\"" }
        if case .memory(let bytes) = served.source {
            let hash = bytes.withUnsafeReadableBytes { Digest.of($0) }
            return "\"\(hash.hex)\""
        }
        return "\"\(served.identity.inode)-\(served.identity.size)-\(served.identity.modifiedNanoseconds)\""
    }

    static func matches(_ header: String, etag: String) -> Bool {
        if header.trimmingCharacters(in: .whitespaces) == "*" { return true }
        return header.split(separator: ",").contains { candidate in
            var tag = candidate.trimmingCharacters(in: .whitespaces)
            if tag.hasPrefix("W/") { tag.removeFirst(2) }
            return tag == etag
        }
    }

    static func contentType(_ object: CatalogObject) -> String {
        switch object {
        case .catalog, .modelIndex, .manifest, .model: return "application/json"
        case .chunk: return "application/zstd"
        case .dictionary: return "application/octet-stream"
        }
    }
}
