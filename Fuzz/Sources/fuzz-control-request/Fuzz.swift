import ControlAPI
import Foundation
import FuzzSupport

// Request bodies of the control API (PATCH /vm, PUT /snapshot/create, PUT /actions) from any local client of the
// machine's Unix socket. Each body goes to both parsers; an accepted snapshot request names two
// different absolute paths.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzControlRequest(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let body = FuzzInput.data(bytes, count)
    guard body.count <= ControlRequests.maximumBodyBytes else { return 0 } // refused before parsing
    _ = try? ControlRequests.vmStateChange(body)
    _ = try? ControlRequests.instanceAction(body)
    if let create = try? ControlRequests.snapshotCreate(body) {
        precondition(create.snapshotPath.hasPrefix("/") && create.memoryFilePath.hasPrefix("/"), "relative path accepted")
        precondition(create.snapshotPath != create.memoryFilePath, "one file for state and memory")
    }
    return 0
}

func seeds() throws -> [String: Data] {
    [
        "pause": Data(#"{"state":"Paused"}"#.utf8),
        "resume": Data(#"{"state":"Resumed"}"#.utf8),
        "stop": Data(#"{"action_type":"InstanceStop"}"#.utf8),
        "snapshot": Data(#"{"snapshot_path":"/tmp/vmstate.json","mem_file_path":"/tmp/memory.img","snapshot_type":"Full"}"#.utf8),
    ]
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    SeedCorpus.writeIfAsked(seeds)
    return 0
}

/// The entry point SwiftPM's link gives this executable (`FuzzDriver`).
@_cdecl("fuzz_control_request_main")
public func entryPoint(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    FuzzDriver.main(argc, argv, fuzzControlRequest)
}
