/// Watches the guest console: forwards every byte to the host, keeps recent output for error messages
/// and tests, and notes when the appliance's ready marker line first appears.
public final class ConsoleMonitor: Sendable {
    /// Recent output kept in memory (bytes); older output is dropped.
    static let retainedBytes = 256 * 1024

    struct State {
        var recent: [UInt8] = []
        var currentLine: [UInt8] = []
        var readySeen = false
        var benchmarkMarks: [String: ContinuousClock.Instant] = [:]
    }

    /// Lines starting with this prefix are timestamped when they arrive (guest-side benchmark phases).
    public static let benchmarkMarkPrefix = Array("BENCH-".utf8)
    static let maximumBenchmarkMarks = 64

    public let readyMarker: [UInt8]
    private let state = Locked(State())
    private let forward: @Sendable (UInt8) -> Void
    private let onReady: @Sendable () -> Void

    public init(readyMarker: String, forward: @escaping @Sendable (UInt8) -> Void, onReady: @escaping @Sendable () -> Void) {
        self.readyMarker = Array(readyMarker.utf8)
        self.forward = forward
        self.onReady = onReady
    }

    public func receive(_ byte: UInt8) {
        forward(byte)
        let becameReady: Bool = state.withLock { state in
            state.recent.append(byte)
            if state.recent.count > Self.retainedBytes { state.recent.removeFirst(state.recent.count - Self.retainedBytes / 2) }
            guard byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") else {
                if state.currentLine.count < 4096 { state.currentLine.append(byte) }
                return false
            }
            defer { state.currentLine.removeAll(keepingCapacity: true) }
            if state.currentLine.starts(with: Self.benchmarkMarkPrefix), state.benchmarkMarks.count < Self.maximumBenchmarkMarks {
                let line = String(decoding: state.currentLine, as: UTF8.self)
                if state.benchmarkMarks[line] == nil { state.benchmarkMarks[line] = .now }
            }
            guard !state.readySeen, !readyMarker.isEmpty, state.currentLine.firstRange(of: readyMarker) != nil else { return false }
            state.readySeen = true
            return true
        }
        if becameReady { onReady() }
    }

    /// Everything retained so far, as text.
    public var output: String { String(decoding: state.withLock { $0.recent }, as: UTF8.self) }
    /// When each "BENCH-..." line first appeared, keyed by the whole line.
    public var benchmarkMarks: [String: ContinuousClock.Instant] { state.withLock { $0.benchmarkMarks } }
    public var isReady: Bool { state.withLock { $0.readySeen } }
}
