import Foundation
import FuzzSupport
import StreamServer

// The request target (path) of any HTTP request to the catalogue server. An accepted target never
// contains a dot segment, an empty segment, a query or a percent escape.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequestTarget(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let raw = FuzzInput.string(bytes, count)
    guard case .success = RequestTarget.parse(raw) else { return 0 }
    precondition(raw.hasPrefix("/"), "relative target accepted")
    precondition(!raw.contains("/../") && !raw.hasSuffix("/..") && !raw.contains("/./") && !raw.contains("//"), "dot or empty segment accepted: \(raw)")
    precondition(!raw.contains("%") && !raw.contains("?") && !raw.contains("\\"), "escape or query accepted: \(raw)")
    return 0
}

func seeds() throws -> [String: Data] {
    let digest = String(repeating: "5e", count: 32) // any SHA-256 hex name
    return [
        "catalog": Data("/catalog.json".utf8),
        "chunk": Data("/chunks/\(digest.prefix(2))/\(digest).zst".utf8),
        "manifest": Data("/manifests/\(digest.prefix(2))/\(digest).json".utf8),
        "trace": Data("/v1/traces/web".utf8),
        "health": Data("/healthz".utf8),
        "metrics": Data("/metrics".utf8),
    ]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_request_target_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzRequestTarget)
}
