import Catalog
import Foundation
import Testing

@Suite struct SignedCatalogTests {
    static func sampleIndex() throws -> CatalogIndex {
        let version = CatalogIndex.Version(manifest: Digest.of(Data("m".utf8)), size: 42, published: Date(timeIntervalSince1970: 1_700_000_000))
        return CatalogIndex(generation: 3, appliances: ["demo": .init(versions: ["1.0": version], latest: "1.0")])
    }

    @Test func signedRoundTrip() throws {
        let key = SigningKey()
        let data = try SignedCatalog(index: try Self.sampleIndex(), key: key).encoded()
        let decoded = try SignedCatalog.decode(data, trust: .key(key.publicKey))
        #expect(decoded.index == (try Self.sampleIndex()))
        #expect(decoded.signer == key.publicKey)
        #expect(try decoded.index.resolve("demo").version == "1.0")
        #expect(try decoded.index.resolve("demo@1.0").entry.size == 42)
        #expect(throws: CatalogError.self) { try decoded.index.resolve("demo@2.0") }
    }

    @Test func tamperedPayloadFailsSignature() throws {
        let key = SigningKey()
        let data = try SignedCatalog(index: try Self.sampleIndex(), key: key).encoded()
        var envelope = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        var payload = Data(base64Encoded: envelope["payload"] as! String)!
        let text = String(decoding: payload, as: UTF8.self).replacingOccurrences(of: "\"size\":42", with: "\"size\":43")
        payload = Data(text.utf8)
        envelope["payload"] = payload.base64EncodedString()
        let tampered = try JSONSerialization.data(withJSONObject: envelope)
        #expect(throws: CatalogError.badSignature(file: "catalog.json")) {
            try SignedCatalog.decode(tampered, trust: .key(key.publicKey))
        }
    }

    @Test func wrongKeyAndUnsignedAreRefused() throws {
        let key = SigningKey(), other = SigningKey()
        let signed = try SignedCatalog(index: try Self.sampleIndex(), key: key).encoded()
        #expect(throws: CatalogError.untrustedKey(file: "catalog.json", key: key.publicKey.base64)) {
            try SignedCatalog.decode(signed, trust: .key(other.publicKey))
        }
        let unsigned = try SignedCatalog(index: try Self.sampleIndex(), key: nil).encoded()
        #expect(throws: CatalogError.unsigned(file: "catalog.json")) { try SignedCatalog.decode(unsigned, trust: .key(key.publicKey)) }
        #expect(try SignedCatalog.decode(unsigned, trust: .insecure).signer == nil)
    }

    @Test func malformedTruncatedAndOversizedAreRefused() throws {
        let key = SigningKey()
        let data = try SignedCatalog(index: try Self.sampleIndex(), key: key).encoded()
        for bad in [data.prefix(data.count / 2), Data("{}".utf8), Data("not json".utf8), Data()] {
            #expect(throws: CatalogError.self) { try SignedCatalog.decode(Data(bad), trust: .key(key.publicKey)) }
        }
        let huge = Data(count: SignedCatalog.maximumBytes + 1)
        #expect(throws: CatalogError.tooLarge(file: "catalog.json", size: huge.count, limit: SignedCatalog.maximumBytes)) {
            try SignedCatalog.decode(huge, trust: .insecure)
        }
    }

    @Test func keyFilesRoundTrip() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = SigningKey()
        try AtomicFile.write(Data(key.fileContents.utf8), to: "\(dir)/k.key")
        try AtomicFile.write(Data(key.publicKey.fileContents.utf8), to: "\(dir)/k.pub")
        #expect(try SigningKey(file: "\(dir)/k.key").publicKey == key.publicKey)
        #expect(try TrustedKey(file: "\(dir)/k.pub") == key.publicKey)
        // A public key file is not a private key file and vice versa.
        #expect(throws: CatalogError.self) { try SigningKey(file: "\(dir)/k.pub") }
        #expect(throws: CatalogError.self) { try TrustedKey(file: "\(dir)/k.key") }
        #expect(throws: CatalogError.self) { try TrustedKey(file: "\(dir)/missing.pub") }
    }
}
