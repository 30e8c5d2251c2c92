/// A 64-bit fingerprint of one page's bytes, used to find candidate duplicates cheaply.
///
/// Like the Difference Engine's page hash, equal fingerprints only nominate pages: the scanner
/// confirms every candidate byte for byte before counting it as shared, so a collision can cost
/// time but never a wrong answer. The mixing (multiply, rotate, xor over 8-byte words) is chosen for
/// speed on a hot scan loop, not for resistance to crafted input.
public struct PageFingerprint: Hashable, Sendable {
    public let value: UInt64

    /// Odd 64-bit constants (from the golden ratio and a large prime) that spread bits in multiplies.
    private static let multiplier: UInt64 = 0x9E37_79B9_7F4A_7C15
    private static let seed: UInt64 = 0xC2B2_AE3D_27D4_EB4F

    public init(of page: UnsafeRawBufferPointer) {
        var hash = Self.seed ^ UInt64(page.count)
        let words = page.count / 8
        for index in 0..<words {
            let word = page.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)
            hash = (hash ^ (word &* Self.multiplier)).rotatedLeft(by: 29) &* Self.multiplier
        }
        for index in (words * 8)..<page.count {
            hash = (hash ^ UInt64(page[index])) &* Self.multiplier
        }
        hash ^= hash >> 32
        value = hash
    }
}

extension UInt64 {
    fileprivate func rotatedLeft(by count: UInt64) -> UInt64 {
        (self << count) | (self >> (64 - count))
    }
}
