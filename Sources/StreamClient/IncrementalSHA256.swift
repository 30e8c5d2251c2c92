import Catalog
import Crypto

/// SHA-256 over data that arrives in pieces (whole artifacts are too large to hash in one buffer).
struct IncrementalSHA256 {
    private var hasher = SHA256()
    mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bufferPointer: bytes) }
    mutating func finalize() -> Catalog.Digest { Catalog.Digest(bytes: hasher.finalize()) }
}
