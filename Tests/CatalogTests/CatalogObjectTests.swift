import Catalog
import Testing

@Suite struct CatalogObjectTests {
    static let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    @Test func parsesExactNames() throws {
        let digest = try Digest(hex: Self.hex)
        #expect(try CatalogObject(path: "catalog.json") == .catalog)
        #expect(try CatalogObject(path: "/catalog.json") == .catalog)
        #expect(try CatalogObject(path: "chunks/ba/\(Self.hex).zst") == .chunk(digest))
        #expect(try CatalogObject(path: "/manifests/ba/\(Self.hex).json") == .manifest(digest))
        #expect(try CatalogObject(path: "dicts/ba/\(Self.hex).zdict") == .dictionary(digest))
        #expect(try CatalogObject(path: "models/ba/\(Self.hex).json") == .model(digest))
        for object in [CatalogObject.catalog, .chunk(digest), .manifest(digest), .dictionary(digest), .model(digest)] {
            #expect(try CatalogObject(path: object.path) == object)
        }
    }

    @Test(arguments: [
        "", "/", "//catalog.json", "catalog.json/", "../catalog.json", "chunks/../catalog.json",
        "chunks/ba/../../etc/passwd", "/etc/passwd", "chunks/ba/\(hex).json", "chunks/bb/\(hex).zst",
        "chunks/BA/\(hex.uppercased()).zst", "chunks/ba/\(hex).zst/", "chunks//ba/\(hex).zst",
        "chunks/ba/%2e%2e/\(hex).zst", "chunks%2fba%2f\(hex).zst", "chunks/ba/\(hex)%00.zst",
        "chunks/ba/\(hex).zst?x=1", "traces/ba/\(hex).json", "chunks/ba/\(String(hex.dropLast())).zst",
        "chunks/ba/\(hex)0.zst", "chunks/ba/\(String(repeating: "a", count: 4096)).zst", "./catalog.json",
        "chunks\\ba\\\(hex).zst", "chunks/zz/zz\(String(hex.dropFirst(2))).zst",
    ])
    func rejectsEverythingElse(_ path: String) {
        #expect(throws: CatalogError.self) { try CatalogObject(path: path) }
    }
}
