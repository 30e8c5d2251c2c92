import Glibc

/// CLOCK_MONOTONIC in nanoseconds: the one host time base of the Hypervisor's own timing (fault
/// latencies, the page-fault handler's waits, disk throttling). Never steps with the wall clock.
enum MonotonicClock {
    @inline(__always)
    static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
