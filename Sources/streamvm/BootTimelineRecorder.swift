import Benchmarks
import StreamBoot
import StreamClient
import Synchronization

/// `boot --timeline`: bytes received over time while the boot buffers (its progress reports) and
/// while the guest runs (sampled every 100 ms), drawn with the stream benchmark's SVG timeline.
final class BootTimelineRecorder: Sendable {
    /// From the start of `boot`, which has received nothing yet.
    private let samples = Mutex<[(seconds: Double, bytes: Int)]>([(0, 0)])
    private let sampler = Mutex<Task<Void, Never>?>(nil)

    func record(_ counters: StreamBootSession.Live.Counters) {
        samples.withLock { $0.append((counters.elapsedSeconds, counters.bytesReceived)) }
    }

    /// Samples the running boot until `stopSampling`.
    func startSampling(_ live: StreamBootSession.Live) {
        let task = Task.detached { [self] in
            while !Task.isCancelled {
                record(live.counters())
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        sampler.withLock { $0 = task }
    }

    func stopSampling() async {
        let task = sampler.withLock { task -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
    }

    /// The timeline: the samples, with the final figures as the last one; stalls from the trace.
    func svg(_ outcome: StreamBootSession.Outcome, mode: PrefetchMode, title: String) -> String {
        record(outcome.counters)
        let points = samples.withLock { $0 }.sorted { $0.seconds < $1.seconds }
        let offset = outcome.report.traceStartSeconds
        let stalls = outcome.trace.records.filter { $0.stallSeconds > 0 }.map { (offset + $0.wallSeconds - $0.stallSeconds, $0.stallSeconds) }
        return StreamBenchmark.timelineSVG([StreamBenchmark.Timeline(mode: mode, samples: points, stalls: stalls, readySeconds: outcome.report.readySeconds)],
                                           title: title)
    }
}
