import Catalog
import Foundation

/// One publish worker's zstd contexts (they are not thread-safe, so each worker owns its own).
final class ChunkWorker: @unchecked Sendable {
    private let compressor: ZstdCompressor
    private let verifier: ObjectVerifier
    private let catalog: CatalogDirectory
    private let dictionary: ZstdDictionary?

    init(level: Int32, dictionary: ZstdDictionary?, catalog: CatalogDirectory) throws {
        compressor = try ZstdCompressor(level: level, dictionary: dictionary)
        verifier = try catalog.makeVerifier()
        self.catalog = catalog
        self.dictionary = dictionary
    }

    func process(_ chunk: UnsafeRawBufferPointer, known: [ChunkID: ChunkRef]) throws -> ChunkResult {
        if ZeroDetection.isAllZero(chunk) { return .zero }
        let id = Digest.of(chunk)
        if let ref = known[id] { return .known(ref) }
        let object = CatalogObject.chunk(id)
        var repair = false
        if catalog.contains(object) {
            if let data = try? catalog.read(object), (try? verifier.verify(object, data: data)) != nil {
                let dictionaryID = zstdFrameDictionaryID(data)
                let dictionaryDigest = dictionaryID == 0 ? nil : try catalog.dictionary(id: dictionaryID)?.digest
                return .existing(id, stored: data.count, dictionary: dictionaryDigest)
            }
            repair = true
        }
        let frame = try compressor.compress(chunk)
        return .compressed(id, frame: frame, dictionary: dictionary?.digest, repair: repair)
    }
}
