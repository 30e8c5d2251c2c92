import Catalog
import NIOCore
import NIOHPACK

/// A verified object held in memory, with the response header values that never change for it
/// computed once when it entered the cache: answering it from the event loop then costs no hashing
/// and no formatting beyond the length of a range.
public struct VerifiedCopy: Sendable {
    /// The verified bytes themselves.
    public let bytes: ByteBuffer
    /// Strong validator (quoted), the same the Hummingbird path sends.
    let entityTag: String
    /// ETag, Cache-Control, Content-Type, Accept-Ranges and Server: sent with every answer about the
    /// object, whatever the status.
    let representationFields: [(String, String)]
    /// The complete HTTP/2 header block of a 200 with the whole object, except `date`.
    let wholeAnswerHeaders: HPACKHeaders

    /// Sent in `server`, as Hummingbird's `ApplicationConfiguration(serverName:)` does on the router path.
    static let serverName = "streamvm"

    init(object: CatalogObject, identity: FileIdentity, bytes: ByteBuffer) {
        self.bytes = bytes
        entityTag = ObjectResponses.entityTag(object, bytes: bytes, identity: identity)
        representationFields = [
            ("etag", entityTag),
            ("cache-control", ObjectResponses.caching(object)),
            ("content-type", ObjectResponses.contentType(object)),
            ("accept-ranges", "bytes"),
            ("server", Self.serverName),
        ]
        var whole = HPACKHeaders([(":status", "200")])
        whole.add(contentsOf: representationFields)
        whole.add(name: "content-length", value: String(bytes.readableBytes))
        wholeAnswerHeaders = whole
    }
}
