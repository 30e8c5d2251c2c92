import Catalog

/// The host's durable chunk cache as the router's second store: `read` hashes a file the first time
/// this process reads it (the cache directory is outside the signed chain), `insert` writes a temp
/// file, fsyncs and renames it, so a crash may lose a chunk but never leaves a wrong one.
extension ChunkCache: LocalChunkStore {
    public var name: String { "disk" }
    public var isDurable: Bool { true }
}
