import Catalog

/// One chunk a reader wants: its name, its decompressed length (from the manifest) and the
/// dictionary its frame was compressed with.
public struct ChunkRequest: Sendable {
    public var ref: ChunkRef
    public var length: Int
    public var dictionary: ZstdDictionary?

    public init(ref: ChunkRef, length: Int, dictionary: ZstdDictionary?) {
        self.ref = ref
        self.length = length
        self.dictionary = dictionary
    }
}

/// A place on this host that holds verified, decompressed chunks and answers at once (memory, a
/// disk cache). `ChunkRouter` reads through these in order and writes what the origin delivered
/// back into each. A store never goes to the network, and returns only bytes that match the
/// chunk's name (a store that keeps them outside this process checks them before trusting them).
public protocol LocalChunkStore: AnyObject, Sendable {
    /// For logs and tests.
    var name: String { get }
    /// Whether `insert` makes the bytes survive this process (then it may block on fsync, and the
    /// router calls it after the waiting readers have their bytes).
    var isDurable: Bool { get }
    /// Whether `read` would find the chunk (cheap: no I/O).
    func contains(_ chunk: ChunkID) -> Bool
    /// `range` of the chunk (whose full length is `length`), or nil when absent or unusable.
    /// With `range` nil, the whole chunk; stores that hold it in memory return it without a copy.
    func read(_ chunk: ChunkID, length: Int, range: Range<Int>?) -> [UInt8]?
    /// Keeps verified bytes of `chunk` (the caller checked them against the name).
    func insert(_ chunk: ChunkID, bytes: [UInt8]) throws
}

/// Where chunks come from when no local store has them: verified bytes, or an error once every
/// origin and retry has failed. The `ticket` carries the request's priority, which may be raised
/// while it is queued (a reader starts waiting for a prefetch).
public protocol RemoteChunkStore: Sendable {
    func fetch(_ request: ChunkRequest, ticket: FetchTicket) async throws -> [UInt8]
}
