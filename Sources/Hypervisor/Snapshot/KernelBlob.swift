import Foundation

/// Saves a KVM state struct as its raw bytes and loads it back with a size check. KVM's state
/// structs are fixed-layout kernel ABI (api.rst), so a byte copy is exact; a blob whose size does not
/// match this build's struct is rejected rather than reinterpreted.
enum KernelBlob {
    static func encode<T>(_ value: T) -> Data {
        withUnsafeBytes(of: value) { Data($0) }
    }

    static func decode<T>(_ data: Data, as _: T.Type, field: String) throws -> T {
        guard data.count == MemoryLayout<T>.size else {
            throw HypervisorError.invalidSnapshot("\(field) is \(data.count) bytes, this host's KVM uses \(MemoryLayout<T>.size)")
        }
        let storage = UnsafeMutablePointer<T>.allocate(capacity: 1)
        defer { storage.deallocate() }
        data.withUnsafeBytes { UnsafeMutableRawPointer(storage).copyMemory(from: $0.baseAddress!, byteCount: data.count) }
        return storage.move()
    }
}
