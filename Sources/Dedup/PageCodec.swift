import CZstd
import Hypervisor

/// zstd for single guest pages: plain compression of cold pages, and deltas of similar pages
/// against a reference page used as a zstd prefix dictionary (the reference's bytes are the window
/// the delta's matches point into, so a page that differs in a few bytes encodes to tens of bytes).
///
/// Contexts are pooled: encoding runs on the scan thread, decoding on the page-fault handler's
/// threads, and a zstd context must not be used by two threads at once.
final class PageCodec: Sendable {
    /// Level 1: the scan runs under a CPU budget, and a page is too small for higher levels to gain much.
    static let level: Int32 = 1

    private let compressors = Locked<[OpaquePointer]>([])
    private let decompressors = Locked<[OpaquePointer]>([])

    deinit {
        compressors.withLock { $0.forEach { ZSTD_freeCCtx($0) } }
        decompressors.withLock { $0.forEach { ZSTD_freeDCtx($0) } }
    }

    /// Compresses `page`, against `reference` as a prefix when given; nil when the result is not
    /// smaller than `limit` bytes (the caller's keep-threshold), so no time goes into storing it.
    func encode(_ page: UnsafeRawBufferPointer, reference: UnsafeRawBufferPointer? = nil, limit: Int) -> [UInt8]? {
        let context = compressors.withLock { $0.popLast() } ?? ZSTD_createCCtx()!
        defer { compressors.withLock { $0.append(context) } }
        ZSTD_CCtx_reset(context, ZSTD_reset_session_only)
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Self.level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 0)
        ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 0)
        if let reference { ZSTD_CCtx_refPrefix(context, reference.baseAddress, reference.count) }
        var output = [UInt8](repeating: 0, count: limit)
        let written = output.withUnsafeMutableBytes { out in
            ZSTD_compress2(context, out.baseAddress, out.count, page.baseAddress, page.count)
        }
        // dstSize_tooSmall (an error) means the page does not fit under the limit.
        guard ZSTD_isError(written) == 0, written < limit else { return nil }
        output.removeLast(limit - written)
        return output
    }

    /// Rebuilds a page from `encoded` (made by `encode` with the same `reference`) into `page`;
    /// throws unless exactly `page.count` bytes come out.
    func decode(_ encoded: [UInt8], reference: UnsafeRawBufferPointer? = nil, into page: UnsafeMutableRawBufferPointer) throws(PageCodecError) {
        let context = decompressors.withLock { $0.popLast() } ?? ZSTD_createDCtx()!
        defer { decompressors.withLock { $0.append(context) } }
        ZSTD_DCtx_reset(context, ZSTD_reset_session_only)
        if let reference { ZSTD_DCtx_refPrefix(context, reference.baseAddress, reference.count) }
        let produced = encoded.withUnsafeBytes { input in
            ZSTD_decompressDCtx(context, page.baseAddress, page.count, input.baseAddress, input.count)
        }
        guard ZSTD_isError(produced) == 0 else {
            throw PageCodecError(message: String(cString: ZSTD_getErrorName(produced)))
        }
        guard produced == page.count else { throw PageCodecError(message: "decoded \(produced) bytes, a page is \(page.count)") }
    }
}

/// A stored page did not decode (a bug or memory corruption: the engine only decodes what it encoded).
struct PageCodecError: Error, CustomStringConvertible {
    let message: String
    var description: String { "zstd: \(message)" }
}
