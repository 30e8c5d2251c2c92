/// The Difference Engine's similarity key: hashes of two 64-byte blocks at fixed offsets of a page,
/// each cut to 18 bits. Two pages that share either block are patch candidates; most pages that
/// differ in a few bytes keep at least one block intact.
struct BlockHash: Sendable {
    /// Offsets of the two blocks (a quarter and three quarters into a 4 KiB page).
    static let offsets = [1024, 3072]
    static let blockLength = 64
    static let bits = 18
    static let buckets = 1 << bits

    /// The two bucket numbers, one per block.
    let buckets: (Int, Int)

    init(of page: UnsafeRawBufferPointer) {
        buckets = (Self.hash(page, at: Self.offsets[0]), Self.hash(page, at: Self.offsets[1]))
    }

    private static func hash(_ page: UnsafeRawBufferPointer, at offset: Int) -> Int {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for word in 0..<(blockLength / 8) {
            hash = (hash ^ page.loadUnaligned(fromByteOffset: offset + word * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3
            hash ^= hash >> 29
        }
        return Int(truncatingIfNeeded: hash >> (64 - UInt64(bits)))
    }
}
