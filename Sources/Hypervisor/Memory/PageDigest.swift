/// A fast 64-bit checksum of one page, kept per page in a snapshot so a lazily read page is checked
/// before it is mapped. It detects corruption and truncation, not tampering: pages that travel over
/// the network are verified by the stream client against SHA-256 chunk digests instead.
///
/// Algorithm: each little-endian 64-bit word is mixed with its index using the multiplier and
/// xor-shift finaliser of SplitMix64 (Steele et al., "Fast splittable pseudorandom number
/// generators", OOPSLA 2014), and the results are summed; 0 is reserved for all-zero pages.
public enum PageDigest {
    static let multiplier: UInt64 = 0xbf58_476d_1ce4_e5b9
    static let secondMultiplier: UInt64 = 0x94d0_49bb_1331_11eb
    static let golden: UInt64 = 0x9e37_79b9_7f4a_7c15

    /// Digest of `page`; 0 exactly when the page is all zeros.
    public static func digest(_ page: UnsafeRawBufferPointer) -> UInt64 {
        var sum: UInt64 = 0
        var anyNonZero = false
        let words = page.count / 8
        for index in 0..<words {
            let word = UInt64(littleEndian: page.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
            if word != 0 { anyNonZero = true }
            var mixed = word &+ UInt64(index) &* golden
            mixed = (mixed ^ (mixed >> 30)) &* multiplier
            mixed = (mixed ^ (mixed >> 27)) &* secondMultiplier
            sum = sum &+ (mixed ^ (mixed >> 31))
        }
        for index in (words * 8)..<page.count where page[index] != 0 {
            anyNonZero = true
            sum = sum &+ UInt64(page[index]) &* golden &+ UInt64(index)
        }
        guard anyNonZero else { return 0 }
        return sum == 0 ? 1 : sum
    }

    /// Whether every byte of `page` is zero (word at a time).
    public static func isZero(_ page: UnsafeRawBufferPointer) -> Bool {
        let words = page.count / 8
        for index in 0..<words where page.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
        for index in (words * 8)..<page.count where page[index] != 0 { return false }
        return true
    }
}
