import Catalog
import Foundation
import Testing

/// models.json: signed by the key the catalogue delegates models to, verified against exactly that key.
@Suite struct SignedModelIndexTests {
    static let model = Digest.of(Data("model".utf8))

    @Test func roundTripsAndVerifiesAgainstTheDelegatedKey() throws {
        let key = SigningKey()
        let bytes = try SignedModelIndex(index: ModelIndex(generation: 3, models: ["demo": Self.model]), key: key).encoded()
        let decoded = try SignedModelIndex.decode(bytes, trust: key.publicKey)
        #expect(decoded.index.models == ["demo": Self.model])
        #expect(decoded.index.generation == 3)
        #expect(decoded.signer == key.publicKey)
    }

    @Test func anotherSignerAnEditedPayloadOrNoSignatureIsRefused() throws {
        let key = SigningKey()
        let bytes = try SignedModelIndex(index: ModelIndex(generation: 1, models: ["demo": Self.model]), key: SigningKey()).encoded()
        #expect(throws: CatalogError.self) { try SignedModelIndex.decode(bytes, trust: key.publicKey) }

        var envelope = try #require(try JSONSerialization.jsonObject(with: try SignedModelIndex(
            index: ModelIndex(generation: 1, models: ["demo": Self.model]), key: key).encoded()) as? [String: Any])
        envelope["payload"] = try JSONEncoder().encode(ModelIndex(generation: 1, models: ["demo": Digest.of(Data("other".utf8))])).base64EncodedString()
        #expect(throws: CatalogError.badSignature(file: "m")) {
            try SignedModelIndex.decode(try JSONSerialization.data(withJSONObject: envelope), trust: key.publicKey, file: "m")
        }
        envelope.removeValue(forKey: "signature")
        #expect(throws: CatalogError.self) { try SignedModelIndex.decode(try JSONSerialization.data(withJSONObject: envelope), trust: nil) }
    }

    @Test func hostileContentIsRefusedNamingTheFile() throws {
        let key = SigningKey()
        let badName = try SignedModelIndex(index: ModelIndex(generation: 1, models: ["../x": Self.model]), key: key).encoded()
        for data in [badName, Data("{}".utf8), Data(repeating: 0x20, count: SignedModelIndex.maximumBytes + 1)] {
            do {
                _ = try SignedModelIndex.decode(data, trust: key.publicKey, file: "models.json")
                Issue.record("accepted a hostile models.json")
            } catch let error as CatalogError {
                #expect(error.description.hasPrefix("models.json"))
            }
        }
    }

    @Test func theCatalogueNamesItsModelKeyInsideTheSignedIndex() throws {
        let catalogueKey = SigningKey(), modelKey = SigningKey()
        let bytes = try SignedCatalog(index: CatalogIndex(generation: 1, modelKey: modelKey.publicKey.base64), key: catalogueKey).encoded()
        let decoded = try SignedCatalog.decode(bytes, trust: .key(catalogueKey.publicKey))
        #expect(decoded.index.modelSigningKey == modelKey.publicKey)
        // Without delegation there is no model key, and an old catalogue (no field) still reads.
        #expect(try SignedCatalog.decode(try SignedCatalog(index: CatalogIndex(generation: 1), key: catalogueKey).encoded(),
                                         trust: .key(catalogueKey.publicKey)).index.modelSigningKey == nil)
        let broken = try SignedCatalog(index: CatalogIndex(generation: 1, modelKey: "not a key"), key: catalogueKey).encoded()
        #expect(throws: CatalogError.self) { try SignedCatalog.decode(broken, trust: .key(catalogueKey.publicKey)) }
        #expect(try CatalogObject(path: "/models.json") == .modelIndex)
        #expect(CatalogObject.modelIndex.path == "models.json")
    }
}
