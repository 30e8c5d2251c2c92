import Foundation

/// Seeds come from the project's own encoders, not from hand-written files: `scripts/fuzz --seeds`
/// runs each target with STREAMVM_FUZZ_WRITE_SEEDS=<dir>, and the target's `LLVMFuzzerInitialize`
/// calls `writeIfAsked`, which writes the seeds there and exits before any fuzzing.
public enum SeedCorpus {
    public static let environmentVariable = "STREAMVM_FUZZ_WRITE_SEEDS"

    public static func writeIfAsked(_ seeds: () throws -> [String: Data]) {
        guard let directory = ProcessInfo.processInfo.environment[environmentVariable], !directory.isEmpty else { return }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (name, bytes) in try seeds().sorted(by: { $0.key < $1.key }) {
                try bytes.write(to: URL(fileURLWithPath: directory).appendingPathComponent(name), options: .atomic)
            }
            exit(0)
        } catch {
            FileHandle.standardError.write(Data("seed corpus: \(error)\n".utf8))
            exit(1)
        }
    }
}

/// Packs integers little-endian, the inverse of `FuzzReader`, for seeds of binary targets.
public struct SeedBytes {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
    public mutating func append(contentsOf other: [UInt8]) { bytes.append(contentsOf: other) }
    public var data: Data { Data(bytes) }
}
