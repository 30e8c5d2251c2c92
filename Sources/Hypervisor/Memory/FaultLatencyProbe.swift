import Glibc

/// Times missing-page faults served by `PageFaultHandler` as the faulting thread sees them (touch →
/// the page is there), one page at a time: the measurement `streamvm bench uffd` sets beside a
/// minimal C handler doing the same (benchmarks/uffd/baseline.c).
public enum FaultLatencyProbe {
    /// Touches each of `pages` pages of fresh guest RAM served from an in-memory source holding
    /// data in every page (so each fault is a UFFDIO_COPY); returns per-touch nanoseconds.
    public static func measure(pages: Int, waitMode: PageFaultHandler.WaitMode) throws -> [UInt64] {
        let pageSize = GuestMemory.pageSize
        var image = [UInt8](repeating: 0, count: pages * pageSize)
        for index in image.indices { image[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
        let memory = try GuestMemory(size: pages * pageSize)
        let source = try InMemoryPageSource(image: image)
        let handler = try PageFaultHandler(memory: memory, source: source, waitMode: waitMode, onError: { _ in })
        handler.start()
        defer { handler.stop() }
        let base = memory.regions[0].host
        var samples = [UInt64](repeating: 0, count: pages)
        var sum: UInt64 = 0
        for page in 0..<pages {
            let start = now()
            sum &+= UInt64(base.load(fromByteOffset: page * pageSize, as: UInt8.self))
            samples[page] = now() &- start
        }
        guard sum == UInt64(pages) * 7, handler.failure == nil else {
            throw HypervisorError.invalidConfiguration("fault probe read wrong bytes (sum \(sum)) or the handler failed")
        }
        return samples
    }

    private static func now() -> UInt64 { MonotonicClock.nanoseconds() }
}
