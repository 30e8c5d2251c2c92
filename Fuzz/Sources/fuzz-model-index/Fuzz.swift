import Catalog
import Foundation
import FuzzSupport

// models.json as a client reads it: signed by the key the catalogue delegates to. Trust nil accepts
// any valid signer, so mutations of the envelope reach the key and signature checks; the payload's
// parser is reached through seeds signed by the real signer.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelIndex(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let signed = try? SignedModelIndex.decode(FuzzInput.data(bytes, count), trust: nil) else { return 0 }
    precondition(signed.index.generation >= 0, "negative generation accepted")
    _ = try? signed.encoded()
    return 0
}

func seeds() throws -> [String: Data] {
    let key = SigningKey()
    return [
        "two-models": try SignedModelIndex(index: ModelIndex(generation: 7, models: ["web": Digest.of(Data("a".utf8)), "db": Digest.of(Data("b".utf8))]), key: key).encoded(),
        "empty": try SignedModelIndex(index: ModelIndex(), key: key).encoded(),
    ]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_model_index_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzModelIndex)
}
