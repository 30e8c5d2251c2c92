/// Disk contents where a per-appliance zstd dictionary pays: lines drawn at random from a fixed pool
/// of random text records. One chunk holds mostly first occurrences (little to compress on its own);
/// across chunks the pool repeats, which a dictionary trained on sample chunks captures.
public enum SimilarRecords {
    public static func disk(bytes count: Int, seed: UInt64 = 7, poolSize: Int = 1024, recordLength: Int = 40) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> UInt64 {
            // xorshift64*: deterministic, so a failing test repeats exactly.
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 0x2545_F491_4F6C_DD1D
        }
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_".utf8)
        let pool: [[UInt8]] = (0..<poolSize).map { _ in
            (0..<recordLength).map { _ in alphabet[Int(next() % UInt64(alphabet.count))] } + [UInt8(ascii: "\n")]
        }
        var disk: [UInt8] = []
        disk.reserveCapacity(count + recordLength + 1)
        while disk.count < count { disk += pool[Int(next() % UInt64(poolSize))] }
        return Array(disk.prefix(count))
    }
}
