import Catalog
import Foundation
import FuzzSupport

// catalog.json from a mirror or CDN, read with --insecure trust so the parser behind the signature
// check is reached (a signed catalogue's payload is parsed the same way once the signature holds).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCatalog(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let catalog = try? SignedCatalog.decode(FuzzInput.data(bytes, count), trust: .insecure) else { return 0 }
    for (name, appliance) in catalog.index.appliances {
        _ = try? catalog.index.resolve(name)
        _ = try? catalog.index.resolve("\(name):\(appliance.latest)")
    }
    _ = catalog.index.manifests
    _ = catalog.index.modelSigningKey
    return 0
}

func seeds() throws -> [String: Data] {
    let published = Date(timeIntervalSince1970: 1_790_000_000)
    let version = CatalogIndex.Version(manifest: Digest.of(Data("manifest".utf8)), size: 1234, published: published)
    let index = CatalogIndex(generation: 3, appliances: [
        "web": CatalogIndex.Appliance(versions: ["1": version, "2": version], latest: "2", model: Digest.of(Data("model".utf8))),
    ], modelKey: SigningKey().publicKey.base64)
    return [
        "unsigned": try SignedCatalog(index: index, key: nil).encoded(),
        "signed": try SignedCatalog(index: index, key: SigningKey()).encoded(),
        "empty": try SignedCatalog(index: CatalogIndex(), key: nil).encoded(),
    ]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_catalog_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzCatalog)
}
