/// All-zero chunks are recorded in manifests but never stored or sent, so they are detected on every
/// chunk the publisher reads; this scans eight bytes at a time.
public enum ZeroDetection {
    public static func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress else { return true }
        let count = buffer.count
        let words = count / 8
        var index = 0
        while index < words {
            if base.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
            index += 1
        }
        var tail = words * 8
        while tail < count {
            if buffer[tail] != 0 { return false }
            tail += 1
        }
        return true
    }
}
