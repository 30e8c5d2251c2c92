import Foundation

/// Checks that an object's bytes match its name. Used by the server before serving, by uploads, by
/// mirrors and by the client cache: every hop re-verifies because no hop trusts the previous one.
public final class ObjectVerifier {
    private let decompressor: ZstdDecompressor
    /// Finds a dictionary by the 32-bit ID written in a frame.
    private let dictionaryResolver: (UInt32) throws -> ZstdDictionary?

    public init(resolveDictionary: @escaping (UInt32) throws -> ZstdDictionary?) throws {
        decompressor = try ZstdDecompressor()
        dictionaryResolver = resolveDictionary
    }

    /// Verifies `data` as the object `object`. For chunks, decompresses the frame (which must declare
    /// its size, at most `Manifest.maximumChunkSize`) and hashes the result.
    public func verify(_ object: CatalogObject, data: Data) throws {
        switch object {
        case .catalog:
            _ = try SignedCatalog.decode(data, trust: .insecure)
        case .modelIndex:
            // Its signer is checked against the catalogue's delegation by clients (and by the learner).
            _ = try SignedModelIndex.decode(data, trust: nil)
        case .manifest(let digest):
            _ = try Manifest.decode(data, expected: digest, file: object.path)
        case .model(let digest):
            let actual = Digest.of(data)
            guard actual == digest else { throw CatalogError.digestMismatch(object: object.path, actual: actual.hex) }
        case .dictionary(let digest):
            let actual = Digest.of(data)
            guard actual == digest else { throw CatalogError.digestMismatch(object: object.path, actual: actual.hex) }
            _ = try ZstdDictionary(bytes: [UInt8](data))
        case .chunk(let id):
            let bytes = try expand(chunk: data, name: object.path)
            let actual = Digest.of(bytes)
            guard actual == id else { throw CatalogError.digestMismatch(object: object.path, actual: actual.hex) }
        }
    }

    /// Decompresses a chunk frame whose size is taken from its own header (bounded).
    public func expand(chunk data: Data, name: String) throws -> [UInt8] {
        try data.withUnsafeBytes { frame -> [UInt8] in
            let declared = zstdFrameContentSize(frame)
            guard let declared, declared > 0, declared <= UInt64(Manifest.maximumChunkSize) else {
                throw CatalogError.decompression(object: name, problem: "frame does not declare a chunk size within \(Manifest.maximumChunkSize) bytes")
            }
            let dictionaryID = zstdFrameDictionaryID(frame)
            if dictionaryID != 0 {
                guard let dictionary = try dictionaryResolver(dictionaryID) else {
                    throw CatalogError.decompression(object: name, problem: "needs dictionary id \(dictionaryID), which is not in the catalogue")
                }
                decompressor.add(dictionary)
            }
            return try decompressor.decompress(frame, expectedSize: Int(declared), object: name)
        }
    }
}
