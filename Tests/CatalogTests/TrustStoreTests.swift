import Catalog
import Foundation
import Testing
import TestSupport

/// The host's trust directory: every *.pub key in it is trusted, a bad key fails the store with its
/// path, and a directory or key anyone could write is refused.
@Suite struct TrustStoreTests {
    static func write(_ text: String, to path: String, mode: mode_t = 0o644) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
    }

    @Test func everyPubKeyIsTrustedAndNoOtherSigner() throws {
        let directory = try TemporaryDirectory("streamvm-trust")
        let first = SigningKey(), second = SigningKey(), stranger = SigningKey()
        try Self.write(first.publicKey.fileContents, to: directory.sub("a.pub"))
        try Self.write(second.publicKey.fileContents, to: directory.sub("b.pub"))
        try Self.write("not a key, and not a .pub file\n", to: directory.sub("README"))
        let store = try TrustStore(directory: directory.path)
        #expect(store.keys.map(\.file) == [directory.sub("a.pub"), directory.sub("b.pub")])

        let index = try SignedCatalogTests.sampleIndex()
        for key in [first, second] {
            let signed = try SignedCatalog(index: index, key: key).encoded()
            #expect(try SignedCatalog.decode(signed, trust: store.trust).signer == key.publicKey)
        }
        let foreign = try SignedCatalog(index: index, key: stranger).encoded()
        #expect(throws: CatalogError.untrustedKey(file: "catalog.json", key: stranger.publicKey.base64)) {
            try SignedCatalog.decode(foreign, trust: store.trust)
        }
        let unsigned = try SignedCatalog(index: index, key: nil).encoded()
        #expect(throws: CatalogError.unsigned(file: "catalog.json")) { try SignedCatalog.decode(unsigned, trust: store.trust) }
    }

    @Test func aMissingDirectoryTrustsNothing() throws {
        let store = try TrustStore(directory: "/nonexistent-streamvm-trust.d")
        #expect(store.keys.isEmpty)
        let signed = try SignedCatalog(index: try SignedCatalogTests.sampleIndex(), key: SigningKey()).encoded()
        #expect(throws: CatalogError.self) { try SignedCatalog.decode(signed, trust: store.trust) }
    }

    @Test func aBadKeyFileIsNamed() throws {
        let directory = try TemporaryDirectory("streamvm-trust")
        try Self.write(SigningKey().publicKey.fileContents, to: directory.sub("good.pub"))
        try Self.write("streamvm-ed25519-public not-base64!\n", to: directory.sub("broken.pub"))
        #expect(throws: CatalogError.invalidKeyFile(path: directory.sub("broken.pub"), problem: "key is not base64")) {
            try TrustStore(directory: directory.path)
        }
        // A private key put there by mistake is named too, not silently skipped.
        try FileManager.default.removeItem(atPath: directory.sub("broken.pub"))
        try Self.write(SigningKey().fileContents, to: directory.sub("oops.pub"))
        #expect(throws: CatalogError.invalidKeyFile(path: directory.sub("oops.pub"), problem: "expected 'streamvm-ed25519-public <base64>'")) {
            try TrustStore(directory: directory.path)
        }
    }

    @Test func aWorldWritableDirectoryOrKeyIsRefused() throws {
        let directory = try TemporaryDirectory("streamvm-trust")
        try Self.write(SigningKey().publicKey.fileContents, to: directory.sub("k.pub"), mode: 0o666)
        #expect(throws: CatalogError.invalidKeyFile(path: directory.sub("k.pub"), problem: "world-writable (anyone could replace the key); chmod o-w it")) {
            try TrustStore(directory: directory.path)
        }
        chmod(directory.sub("k.pub"), 0o644)
        chmod(directory.path, 0o777)
        #expect(throws: CatalogError.untrustworthyTrustDirectory(path: directory.path, problem: "world-writable (anyone could add a key); chmod o-w it")) {
            try TrustStore(directory: directory.path)
        }
        chmod(directory.path, 0o755)
        #expect(try TrustStore(directory: directory.path).keys.count == 1)
    }

    @Test func aFileInPlaceOfTheDirectoryIsRefused() throws {
        let directory = try TemporaryDirectory("streamvm-trust")
        try Self.write("x", to: directory.sub("file"))
        #expect(throws: CatalogError.untrustworthyTrustDirectory(path: directory.sub("file"), problem: "not a directory")) {
            try TrustStore(directory: directory.sub("file"))
        }
    }
}
