import Catalog
import Foundation
import Testing

@Suite struct DigestTests {
    @Test func knownVector() throws {
        // FIPS 180-2 test vector for "abc".
        let digest = Digest.of(Data("abc".utf8))
        #expect(digest.hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(try Digest(hex: digest.hex) == digest)
    }

    @Test(arguments: ["", "abc", String(repeating: "A", count: 64), String(repeating: "g", count: 64),
                      String(repeating: "0", count: 63), String(repeating: "0", count: 65)])
    func rejectsNonCanonicalHex(_ text: String) {
        #expect(throws: CatalogError.self) { try Digest(hex: text) }
    }

    @Test func zeroDetection() {
        var bytes = [UInt8](repeating: 0, count: 65537)
        #expect(bytes.withUnsafeBytes { ZeroDetection.isAllZero($0) })
        bytes[65536] = 1
        #expect(!bytes.withUnsafeBytes { ZeroDetection.isAllZero($0) })
        bytes[65536] = 0
        bytes[3] = 9
        #expect(!bytes.withUnsafeBytes { ZeroDetection.isAllZero($0) })
    }
}
