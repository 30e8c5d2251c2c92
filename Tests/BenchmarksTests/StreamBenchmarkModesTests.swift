import Benchmarks
import Testing
import StreamBoot
import StreamClient

/// `bench stream --modes`: which modes a run evaluates, in the order given.
struct StreamBenchmarkModesTests {
    @Test func aListNamesModesInItsOrder() throws {
        #expect(try StreamBenchmark.modes(from: "none") == [.none])
        #expect(try StreamBenchmark.modes(from: "vtube, none") == [.vtube, .none])
        #expect(try StreamBenchmark.modes(from: "full,none,workingset,vtube") == [.full, .none, .workingset, .vtube])
    }

    @Test func unknownRepeatedOrEmptyNamesAreRefusedWithTheReason() {
        #expect(throws: ClientError.self) { try StreamBenchmark.modes(from: "") }
        #expect(throws: ClientError.self) { try StreamBenchmark.modes(from: "none,,vtube") }
        #expect(throws: ClientError.self) { try StreamBenchmark.modes(from: "none,none") }
        do {
            _ = try StreamBenchmark.modes(from: "vtube,reap")
            Issue.record("an unknown mode was accepted")
        } catch {
            #expect("\(error)".contains("unknown mode 'reap'"))
        }
    }
}
