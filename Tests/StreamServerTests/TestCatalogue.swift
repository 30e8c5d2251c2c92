import Catalog
import Foundation

/// A small but real catalogue in a temporary directory: zstd chunks, a manifest that names them and
/// a signed catalog.json, built with the Catalog module's own types.
final class TestCatalogue {
    let base: String
    let directory: CatalogDirectory
    let key = SigningKey()
    private(set) var chunks: [(object: CatalogObject, frame: [UInt8], plain: [UInt8])] = []
    private(set) var manifestDigest: Digest!
    private(set) var manifestBytes = Data()

    static let chunkSize = 64 << 10

    init(chunkCount: Int = 4, signed: Bool = true) throws {
        var template = Array("/tmp/streamvm-servertest-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CatalogError.io(path: "/tmp", errno: errno) }
        base = String(cString: made)
        directory = try CatalogDirectory(root: base + "/catalog", create: true)
        let compressor = try ZstdCompressor(level: 3)
        var refs = [ChunkRef?]()
        var artifact = [UInt8]()
        for index in 0..<chunkCount {
            let plain = Self.chunkBytes(seed: UInt64(index + 1))
            let frame = try compressor.compress(plain)
            let id = Digest.of(plain)
            try directory.write(.chunk(id), data: frame)
            chunks.append((.chunk(id), frame, plain))
            refs.append(ChunkRef(id: id, stored: frame.count))
            artifact += plain
        }
        let config = ApplianceConfig(name: "demo", version: "1", memoryMiB: 64, vcpus: 1)
        let manifest = Manifest(config: config, chunkSize: Self.chunkSize, dictionaries: [],
                                artifacts: [Artifact(role: .disk, size: artifact.count, digest: Digest.of(artifact), chunks: refs)])
        manifestBytes = try manifest.encoded()
        manifestDigest = Digest.of(manifestBytes)
        try directory.write(.manifest(manifestDigest), data: manifestBytes)
        try directory.write(.catalog, data: try catalogBytes(generation: 1, signedBy: signed ? key : nil))
    }

    deinit { try? FileManager.default.removeItem(atPath: base) }

    /// catalog.json naming this catalogue's manifest.
    func catalogBytes(generation: Int, signedBy signer: SigningKey?, manifest: Digest? = nil) throws -> Data {
        let version = CatalogIndex.Version(manifest: manifest ?? manifestDigest, size: chunks.count * Self.chunkSize, published: Date(timeIntervalSince1970: 1_700_000_000))
        let index = CatalogIndex(generation: generation, appliances: ["demo": .init(versions: ["1": version], latest: "1")])
        return try SignedCatalog(index: index, key: signer).encoded()
    }

    /// Compressible, distinct per seed.
    static func chunkBytes(seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        var bytes = [UInt8]()
        bytes.reserveCapacity(chunkSize)
        while bytes.count < chunkSize {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let word = Array("word\(state >> 58) ".utf8)
            bytes.append(contentsOf: word)
        }
        return Array(bytes.prefix(chunkSize))
    }

    func path(_ object: CatalogObject) -> String { directory.filePath(object) }
}
