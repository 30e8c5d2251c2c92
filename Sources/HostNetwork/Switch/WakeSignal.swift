import Glibc

/// A wake-up the switch thread sleeps on with a nanosecond deadline on CLOCK_MONOTONIC (a
/// condition variable: poll(2) has only millisecond timeouts and ppoll is not visible to Swift).
final class WakeSignal: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var pending = false

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func signal() {
        pthread_mutex_lock(mutex)
        pending = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Waits for a signal or until `deadline` (monotonic ns; nil waits for a signal only).
    func wait(until deadline: UInt64?) {
        pthread_mutex_lock(mutex)
        var time = timespec(tv_sec: Int((deadline ?? 0) / 1_000_000_000), tv_nsec: Int((deadline ?? 0) % 1_000_000_000))
        while !pending {
            if deadline != nil {
                if pthread_cond_timedwait(condition, mutex, &time) == ETIMEDOUT { break }
            } else {
                pthread_cond_wait(condition, mutex)
            }
        }
        pending = false
        pthread_mutex_unlock(mutex)
    }
}
