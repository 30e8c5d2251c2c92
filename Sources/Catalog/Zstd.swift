import CZstd
import Foundation

/// A trained zstd dictionary. It is itself a content-addressed catalogue object (`dicts/<digest>.zdict`),
/// and chunk frames compressed with it carry its `dictionaryID` in their header.
public struct ZstdDictionary: Sendable, Equatable {
    public let bytes: [UInt8]
    public let digest: Digest
    /// The 32-bit ID zstd writes into frames compressed with this dictionary.
    public let dictionaryID: UInt32

    public init(bytes: [UInt8]) throws {
        let id = bytes.withUnsafeBytes { ZDICT_getDictID($0.baseAddress, $0.count) }
        guard id != 0 else { throw CatalogError.malformed(file: "dictionary", problem: "not a zstd dictionary") }
        self.bytes = bytes
        self.digest = Digest.of(bytes)
        self.dictionaryID = id
    }

    /// Trains a dictionary from sample chunks (zstd's COVER trainer). Returns nil when the samples are
    /// too few or too uniform to train on, which is normal for small or all-text appliances.
    public static func train(samples: [[UInt8]], capacity: Int = 112 * 1024) -> ZstdDictionary? {
        // zdict needs a handful of samples at least; below this it fails or overfits.
        let minimumSamples = 8
        guard samples.count >= minimumSamples else { return nil }
        let joined = samples.flatMap { $0 }
        let sizes = samples.map { Int($0.count) }
        var dictionary = [UInt8](repeating: 0, count: capacity)
        let size = dictionary.withUnsafeMutableBytes { out in
            joined.withUnsafeBytes { input in
                sizes.withUnsafeBufferPointer { sizes in
                    ZDICT_trainFromBuffer(out.baseAddress, out.count, input.baseAddress, sizes.baseAddress, UInt32(sizes.count))
                }
            }
        }
        guard ZDICT_isError(size) == 0 else { return nil }
        return try? ZstdDictionary(bytes: Array(dictionary.prefix(size)))
    }
}

/// Reads the dictionary ID from a zstd frame header; 0 means the frame needs no dictionary.
public func zstdFrameDictionaryID(_ frame: some ContiguousBytes) -> UInt32 {
    frame.withUnsafeBytes { ZSTD_getDictID_fromFrame($0.baseAddress, $0.count) }
}

/// A compression context. Not thread-safe: one per worker. Contexts are reused because creating one
/// per chunk costs more than compressing a small chunk.
public final class ZstdCompressor {
    private let context: OpaquePointer
    private var dictionary: OpaquePointer?
    public let level: Int32
    public let dictionaryInUse: ZstdDictionary?

    /// Default publish level; the ratio/speed trade-off behind it is measured in BENCHMARKS.md.
    public static let defaultLevel: Int32 = 9

    public init(level: Int32 = ZstdCompressor.defaultLevel, dictionary: ZstdDictionary? = nil) throws {
        guard let context = ZSTD_createCCtx() else { throw CatalogError.compression("out of memory") }
        self.context = context
        self.level = level
        self.dictionaryInUse = dictionary
        if let dictionary {
            self.dictionary = dictionary.bytes.withUnsafeBytes { ZSTD_createCDict($0.baseAddress, $0.count, level) }
            guard self.dictionary != nil else {
                ZSTD_freeCCtx(context)
                throw CatalogError.compression("cannot load dictionary \(dictionary.digest.short)")
            }
        }
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 0)
    }

    deinit {
        ZSTD_freeCCtx(context)
        if let dictionary { ZSTD_freeCDict(dictionary) }
    }

    public func compress(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = output.withUnsafeMutableBytes { out -> Int in
            if let dictionary {
                return ZSTD_compress_usingCDict(context, out.baseAddress, out.count, input.baseAddress, input.count, dictionary)
            }
            return ZSTD_compressCCtx(context, out.baseAddress, out.count, input.baseAddress, input.count, level)
        }
        guard ZSTD_isError(written) == 0 else {
            throw CatalogError.compression(String(cString: ZSTD_getErrorName(written)))
        }
        output.removeSubrange(written...)
        return output
    }

    public func compress(_ input: [UInt8]) throws -> [UInt8] {
        try input.withUnsafeBytes { try compress($0) }
    }
}

/// A decompression context with the dictionaries it may need. Not thread-safe: one per worker.
/// The output size is always known in advance (from the manifest), so a frame that claims or
/// produces anything else is rejected before a byte is used: a hostile frame cannot make us allocate.
public final class ZstdDecompressor {
    private let context: OpaquePointer
    private var dictionaries: [UInt32: OpaquePointer] = [:]

    public init() throws {
        guard let context = ZSTD_createDCtx() else { throw CatalogError.compression("out of memory") }
        self.context = context
    }

    deinit {
        ZSTD_freeDCtx(context)
        for dictionary in dictionaries.values { ZSTD_freeDDict(dictionary) }
    }

    public func add(_ dictionary: ZstdDictionary) {
        guard dictionaries[dictionary.dictionaryID] == nil else { return }
        dictionaries[dictionary.dictionaryID] = dictionary.bytes.withUnsafeBytes {
            ZSTD_createDDict($0.baseAddress, $0.count)
        }
    }

    /// Decompresses one frame that must expand to exactly `expectedSize` bytes.
    public func decompress(_ frame: UnsafeRawBufferPointer, expectedSize: Int, object: String) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: expectedSize)
        try output.withUnsafeMutableBytes { try decompress(frame, into: $0, object: object) }
        return output
    }

    /// Decompresses one frame into `output`, which it must fill exactly.
    public func decompress(_ frame: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, object: String) throws {
        let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        if declared == ZSTD_CONTENTSIZE_ERROR {
            throw CatalogError.decompression(object: object, problem: "not a zstd frame")
        }
        if declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != UInt64(output.count) {
            throw CatalogError.decompression(object: object, problem: "frame declares \(declared) bytes, expected \(output.count)")
        }
        let dictionaryID = ZSTD_getDictID_fromFrame(frame.baseAddress, frame.count)
        let written: Int
        if dictionaryID != 0 {
            guard let dictionary = dictionaries[dictionaryID] else {
                throw CatalogError.decompression(object: object, problem: "needs dictionary id \(dictionaryID), which the manifest does not provide")
            }
            written = ZSTD_decompress_usingDDict(context, output.baseAddress, output.count, frame.baseAddress, frame.count, dictionary)
        } else {
            written = ZSTD_decompressDCtx(context, output.baseAddress, output.count, frame.baseAddress, frame.count)
        }
        if ZSTD_isError(written) != 0 {
            throw CatalogError.decompression(object: object, problem: String(cString: ZSTD_getErrorName(written)))
        }
        guard written == output.count else {
            throw CatalogError.decompression(object: object, problem: "expanded to \(written) bytes, expected \(output.count)")
        }
    }
}

/// The content size a zstd frame declares in its header, or nil if it declares none or is not a frame.
public func zstdFrameContentSize(_ frame: UnsafeRawBufferPointer) -> UInt64? {
    let size = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
    if size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN { return nil }
    return size
}
