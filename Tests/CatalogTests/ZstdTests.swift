import Catalog
import Foundation
import Testing

@Suite struct ZstdTests {
    /// Text-like data that compresses, varied per chunk so a dictionary has something to learn.
    static func sampleChunk(_ seed: Int, size: Int = 16384) -> [UInt8] {
        var out = [UInt8]()
        var n = seed
        while out.count < size {
            n = (n &* 1103515245 &+ 12345) & 0x7fffffff
            out.append(contentsOf: Array("record \(n % 1000) field=value-\(n % 37) status=ok\n".utf8))
        }
        return Array(out.prefix(size))
    }

    @Test func roundTripWithoutDictionary() throws {
        let input = Self.sampleChunk(1)
        let frame = try ZstdCompressor(level: 3).compress(input)
        #expect(frame.count < input.count)
        let output = try frame.withUnsafeBytes { try ZstdDecompressor().decompress($0, expectedSize: input.count, object: "t") }
        #expect(output == input)
        #expect(zstdFrameDictionaryID(frame) == 0)
    }

    @Test func roundTripWithDictionary() throws {
        let samples = (0..<64).map { Self.sampleChunk($0) }
        let dictionary = try #require(ZstdDictionary.train(samples: samples, capacity: 16384))
        let input = Self.sampleChunk(999)
        let frame = try ZstdCompressor(level: 3, dictionary: dictionary).compress(input)
        #expect(zstdFrameDictionaryID(frame) == dictionary.dictionaryID)
        let decompressor = try ZstdDecompressor()
        // Without the dictionary the frame cannot be read, and says so.
        #expect(throws: CatalogError.self) {
            try frame.withUnsafeBytes { try decompressor.decompress($0, expectedSize: input.count, object: "t") }
        }
        decompressor.add(dictionary)
        let output = try frame.withUnsafeBytes { try decompressor.decompress($0, expectedSize: input.count, object: "t") }
        #expect(output == input)
    }

    @Test func hostileFramesAreRejected() throws {
        let input = Self.sampleChunk(2)
        let frame = try ZstdCompressor(level: 3).compress(input)
        let decompressor = try ZstdDecompressor()
        // Declared size differs from what the manifest says.
        #expect(throws: CatalogError.self) {
            try frame.withUnsafeBytes { try decompressor.decompress($0, expectedSize: input.count + 1, object: "t") }
        }
        // Truncated frame.
        #expect(throws: CatalogError.self) {
            try Array(frame.prefix(frame.count / 2)).withUnsafeBytes { try decompressor.decompress($0, expectedSize: input.count, object: "t") }
        }
        // Not a frame at all.
        #expect(throws: CatalogError.self) {
            try [UInt8](repeating: 0x41, count: 100).withUnsafeBytes { try decompressor.decompress($0, expectedSize: input.count, object: "t") }
        }
    }

    @Test func verifierRejectsChunkUnderWrongName() throws {
        let input = Self.sampleChunk(3)
        let frame = Data(try ZstdCompressor(level: 3).compress(input))
        let verifier = try ObjectVerifier(resolveDictionary: { _ in nil })
        try verifier.verify(.chunk(Digest.of(input)), data: frame)
        #expect(throws: CatalogError.self) { try verifier.verify(.chunk(Digest.of(Data("other".utf8))), data: frame) }
    }
}
