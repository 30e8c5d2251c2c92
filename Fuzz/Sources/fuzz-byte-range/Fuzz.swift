import Foundation
import FuzzSupport
import StreamServer

// A Range header from any HTTP client, resolved against an object size the input also picks.
// Whatever the header says, a partial answer must lie inside the object.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzByteRange(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzReader(bytes, count)
    // Object sizes up to 2^62: anything a file can be, and far beyond.
    let size = Int(input.integer(UInt64.self) >> 2)
    let header = String(decoding: input.remaining(), as: UTF8.self)
    switch ByteRange.parse(header, size: size) {
    case .partial(let range):
        precondition(range.offset >= 0 && range.length > 0, "empty or negative range \(range)")
        precondition(range.offset <= size - range.length, "range \(range) outside an object of \(size) bytes")
        precondition(range.lastByte < size, "last byte past the end")
    case .whole, .unsatisfiable:
        break
    }
    return 0
}

func seeds() throws -> [String: Data] {
    func seed(_ size: UInt64, _ header: String) -> Data {
        var bytes = SeedBytes()
        bytes.append(size << 2)
        bytes.append(contentsOf: Array(header.utf8))
        return bytes.data
    }
    return [
        "first-and-last": seed(65536, "bytes=0-1023"),
        "open-ended": seed(65536, "bytes=4096-"),
        "suffix": seed(100, "bytes=-500"),
        "unsatisfiable": seed(10, "bytes=20-30"),
    ]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_byte_range_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzByteRange)
}
