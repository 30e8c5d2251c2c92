import Foundation
import Testing
@testable import Dedup

@Suite struct PageCodecTests {
    static func randomPage(seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<4096).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    @Test func aSimilarPageEncodesAsASmallDeltaAndDecodesExactly() throws {
        let codec = PageCodec()
        let reference = Self.randomPage(seed: 1)
        var page = reference
        page[100] ^= 0xff
        page[3000] = 7
        let delta = try #require(reference.withUnsafeBytes { ref in page.withUnsafeBytes { codec.encode($0, reference: ref, limit: 2048) } })
        #expect(delta.count < 64, "a two-byte difference costs \(delta.count) bytes")
        var rebuilt = [UInt8](repeating: 0, count: 4096)
        try reference.withUnsafeBytes { ref in try rebuilt.withUnsafeMutableBytes { try codec.decode(delta, reference: ref, into: $0) } }
        #expect(rebuilt == page)
    }

    @Test func anUnrelatedPageIsNotKeptAsAPatchAndRandomBytesDoNotCompress() {
        let codec = PageCodec()
        let reference = Self.randomPage(seed: 1)
        let page = Self.randomPage(seed: 2)
        #expect(reference.withUnsafeBytes { ref in page.withUnsafeBytes { codec.encode($0, reference: ref, limit: 2048) } } == nil)
        #expect(page.withUnsafeBytes { codec.encode($0, limit: 3072) } == nil)
    }

    @Test func aCorruptEncodingThrowsInsteadOfReturningWrongBytes() throws {
        let codec = PageCodec()
        let page = [UInt8](repeating: 9, count: 4096)
        var encoded = try #require(page.withUnsafeBytes { codec.encode($0, limit: 3072) })
        encoded.removeLast()
        var rebuilt = [UInt8](repeating: 0, count: 4096)
        #expect(throws: (any Error).self) { try rebuilt.withUnsafeMutableBytes { try codec.decode(encoded, into: $0) } }
    }
}
