import Catalog
import Foundation
import FuzzSupport

// A run trace as POST /v1/traces/<appliance> receives it from any client holding the trace token.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTrace(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let trace = try? RunTrace.decode(FuzzInput.data(bytes, count), file: "trace") else { return 0 }
    precondition(trace.records.count <= RunTrace.maximumRecords, "oversized trace accepted")
    for record in trace.records { _ = record.orderSeconds }
    return 0
}

func seeds() throws -> [String: Data] {
    let manifest = Digest.of(Data("manifest".utf8))
    let records = [
        RunTrace.Record(location: ChunkLocation(role: .kernel, index: 0), chunk: Digest.of(Data("k0".utf8)), offset: 0,
                        wallSeconds: 0.01, guestSeconds: nil, outcome: .demandMiss, stallSeconds: 0.005),
        RunTrace.Record(location: ChunkLocation(role: .disk, index: 12), chunk: nil, offset: 12 * 65536 + 512,
                        wallSeconds: 0.5, guestSeconds: 0.25, outcome: .zero, stallSeconds: 0),
        RunTrace.Record(location: ChunkLocation(role: .memory, index: 3), chunk: Digest.of(Data("m3".utf8)), offset: 3 * 65536,
                        wallSeconds: 0.75, guestSeconds: 0.5, outcome: .prefetchHit, stallSeconds: 0),
    ]
    let trace = RunTrace(appliance: "web", version: "1", manifest: manifest, prefetch: "vtube", model: Digest.of(Data("model".utf8)),
                         started: Date(timeIntervalSince1970: 1_790_000_000.25), readySeconds: 1.5, records: records)
    let bare = RunTrace(appliance: "web", version: "1", manifest: manifest, prefetch: "none", model: nil,
                        started: Date(timeIntervalSince1970: 1_790_000_000), readySeconds: nil, records: [])
    return ["three-records": try trace.encoded(), "empty": try bare.encoded()]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_trace_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzTrace)
}
