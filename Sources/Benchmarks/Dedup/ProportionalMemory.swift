import Foundation

/// Host memory behind address ranges of this process, from /proc/self/smaps: PSS (a page shared by
/// n mappings counts 1/n, so KSM-merged pages count once across guests), RSS, and the KSM line
/// where the kernel has one.
struct ProportionalMemory: Codable, Sendable, Equatable {
    var pssBytes = 0
    var rssBytes = 0
    var ksmBytes = 0

    /// Sums every mapping that overlaps one of `ranges` (start, length).
    static func of(ranges: [(start: UInt, length: Int)]) throws -> ProportionalMemory {
        // Read to the end: String(contentsOfFile:) stops after the first 4 KiB of a procfs file.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps") else { throw BenchmarkFailure("cannot open /proc/self/smaps") }
        defer { try? handle.close() }
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        var total = ProportionalMemory()
        var inside = false
        for line in text.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
               let start = UInt(line[line.startIndex..<dash], radix: 16), let end = UInt(line[line.index(after: dash)..<space], radix: 16) {
                // Overlap, not containment: adjacent anonymous mappings with the same flags merge into
                // one VMA, so a guest's RAM can share a VMA with its neighbour (each VMA counts once).
                inside = ranges.contains { start < $0.start + UInt($0.length) && end > $0.start }
                continue
            }
            guard inside else { continue }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kib = Int(fields[1]) else { continue }
            switch fields[0] {
            case "Pss:": total.pssBytes += kib << 10
            case "Rss:": total.rssBytes += kib << 10
            case "KSM:": total.ksmBytes += kib << 10
            default: break
            }
        }
        return total
    }
}
