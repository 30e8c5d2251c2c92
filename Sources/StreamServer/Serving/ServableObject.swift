import Catalog
import NIOCore

/// A verified object ready to be written to a client.
public struct ServableObject: Sendable {
    public enum Source: Sendable {
        /// The verified bytes themselves.
        case memory(ByteBuffer)
        /// A file too large to hold in memory; it is read in blocks from a descriptor whose identity
        /// must still be the verified one.
        case file(String)
    }

    public let object: CatalogObject
    public let identity: FileIdentity
    public let source: Source

    public var size: Int { identity.size }
}
