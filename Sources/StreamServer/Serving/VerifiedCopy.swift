import Catalog
import NIOCore
import NIOHPACK

/// A verified object held in memory, with the response header values that never change for it
/// computed once when it entered the cache: answering it from the event loop then costs no hashing
/// and no formatting beyond the length of a range.
public struct VerifiedCopy: Sendable {
    /// The verified bytes themselves.
    public let bytes: ByteBuffer
    /// The file the bytes came from and its identity then: the copy may be served only while the
    /// file still has that identity.
    let filePath: String
    let identity: FileIdentity
    /// The canonical request target ("/" + path) by which the event loop finds the copy; nil for
    /// catalog.json, which changes under its name and is always answered by the router.
    let requestTarget: String?
    /// Strong validator (quoted), the same the Hummingbird path sends.
    let entityTag: String
    /// ETag, Cache-Control, Content-Type, Accept-Ranges and Server: sent with every answer about the
    /// object, whatever the status.
    let representationFields: [(String, String)]
    /// The complete HTTP/2 header block of a 200 with the whole object, except `date`.
    let wholeAnswerHeaders: HPACKHeaders

    /// Sent in `server`, as Hummingbird's `ApplicationConfiguration(serverName:)` does on the router path.
    static let serverName = "streamvm"

    /// Adds the representation fields to an HTTP/2 header block. Values unique to one object (the
    /// entity tag) are sent without HPACK indexing: with thousands of objects they would only churn
    /// the 4 KiB dynamic table, and every lookup in it is a linear scan in swift-nio-http2's encoder.
    static func addRepresentation(_ fields: [(String, String)], to headers: inout HPACKHeaders) {
        for (name, value) in fields {
            headers.add(name: name, value: value, indexing: name == "etag" ? .nonIndexable : .indexable)
        }
    }

    init(object: CatalogObject, filePath: String, identity: FileIdentity, bytes: ByteBuffer) {
        self.bytes = bytes
        self.filePath = filePath
        self.identity = identity
        requestTarget = object == .catalog ? nil : "/" + object.path
        entityTag = ObjectResponses.entityTag(object, bytes: bytes, identity: identity)
        representationFields = [
            ("etag", entityTag),
            ("cache-control", ObjectResponses.caching(object)),
            ("content-type", ObjectResponses.contentType(object)),
            ("accept-ranges", "bytes"),
            ("server", Self.serverName),
        ]
        var whole = HPACKHeaders([(":status", "200")])
        Self.addRepresentation(representationFields, to: &whole)
        whole.add(name: "content-length", value: String(bytes.readableBytes), indexing: .nonIndexable)
        wholeAnswerHeaders = whole
    }
}
