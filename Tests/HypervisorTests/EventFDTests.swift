import Foundation
import Testing
@testable import Hypervisor

/// The eventfd counter semantics irqfd/ioeventfd rely on: signals add up, a read returns the sum
/// and resets it, and a waiting reader is woken by a signal from another thread.
struct EventFDTests {
    @Test func signalsAccumulateUntilRead() throws {
        let event = try EventFD()
        event.signal()
        event.signal()
        event.signal()
        #expect(try event.wait() == 3)
        event.signal()
        #expect(try event.wait() == 1)
    }

    @Test func aSignalFromAnotherThreadWakesTheReader() throws {
        let event = try EventFD()
        let woken = DispatchSemaphore(value: 0)
        let value = Locked<UInt64>(0)
        Thread.detachNewThread {
            let read = (try? event.wait()) ?? 0
            value.withLock { $0 = read }
            woken.signal()
        }
        event.signal()
        #expect(woken.wait(timeout: .now() + 30) == .success)
        #expect(value.withLock { $0 } == 1)
    }
}
