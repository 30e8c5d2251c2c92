import Catalog
import Foundation

/// A small signed catalogue written with the Catalog module's own primitives, shaped to exercise the
/// client: random chunks, all-zero chunks (absent from the catalogue), a chunk that repeats, a short
/// last chunk.
struct FixtureCatalog {
    let root: String
    let key: SigningKey
    let manifest: Manifest
    let manifestDigest: Digest
    let image: [UInt8]
    let name: String
    let generation: Int

    var trust: SignedCatalog.Trust { .key(key.publicKey) }
    var disk: Artifact { manifest.artifact(.disk)! }

    /// Chunk indices of `disk` that are all zero.
    var zeroChunkIndices: [Int] { disk.chunks.indices.filter { disk.chunks[$0] == nil } }

    static func make(root: String, key: SigningKey = SigningKey(), name: String = "tiny", version: String = "1",
                     chunkSize: Int = 4096, chunkCount: Int = 64, seed: UInt64 = 1, generation: Int = 1) throws -> FixtureCatalog {
        var generator = SeededGenerator(seed: seed)
        let size = chunkSize * chunkCount - chunkSize / 3
        var image = [UInt8](repeating: 0, count: size)
        for index in 0..<chunkCount {
            let start = index * chunkSize, end = min(size, start + chunkSize)
            if index % 5 == 2 { continue }  // zero chunk
            if index % 7 == 6, index >= 7 {   // repeats an earlier chunk
                let source = (index - 7) * chunkSize
                if index - 7 != chunkCount - 1 { image.replaceSubrange(start..<end, with: image[source..<(source + end - start)]) }
                continue
            }
            // Half random, half compressible text, so frames are of varied size.
            for offset in start..<end {
                image[offset] = offset - start < chunkSize / 2 ? UInt8.random(in: 0...255, using: &generator) : UInt8(65 + (offset % 23))
            }
        }
        let directory = try CatalogDirectory(root: root, create: true)
        let compressor = try ZstdCompressor(level: 3)
        var refs: [ChunkRef?] = []
        for index in 0..<chunkCount {
            let slice = Array(image[(index * chunkSize)..<min(size, (index + 1) * chunkSize)])
            if slice.withUnsafeBytes({ ZeroDetection.isAllZero($0) }) {
                refs.append(nil)
                continue
            }
            let frame = try compressor.compress(slice)
            let id = Digest.of(slice)
            try directory.write(.chunk(id), data: frame)
            refs.append(ChunkRef(id: id, stored: frame.count))
        }
        let config = ApplianceConfig(name: name, version: version, memoryMiB: 64, vcpus: 1)
        let manifest = Manifest(config: config, chunkSize: chunkSize, dictionaries: [],
                                artifacts: [Artifact(role: .disk, size: size, digest: Digest.of(image), chunks: refs)])
        let manifestBytes = try manifest.encoded()
        let manifestDigest = Digest.of(manifestBytes)
        try directory.write(.manifest(manifestDigest), data: manifestBytes)
        var index = (try? directory.loadCatalog(trust: .insecure))?.index ?? CatalogIndex()
        index.generation = generation
        var appliance = index.appliances[name] ?? CatalogIndex.Appliance(versions: [:], latest: version)
        appliance.versions[version] = CatalogIndex.Version(manifest: manifestDigest, size: size, published: Date(timeIntervalSince1970: 1_700_000_000))
        appliance.latest = version
        index.appliances[name] = appliance
        try directory.write(.catalog, data: try SignedCatalog(index: index, key: key).encoded())
        return FixtureCatalog(root: root, key: key, manifest: manifest, manifestDigest: manifestDigest, image: image,
                              name: name, generation: generation)
    }
}

/// SplitMix64: deterministic test data from a seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
