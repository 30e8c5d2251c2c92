import Foundation
import StreamBoot

/// What `streamvm boot` shows a person at a terminal: one line redrawn while the startup buffer
/// fills (bytes, rate, ETA), a line when the guest starts, one when it is ready and a closing
/// summary. Drawn on stderr and only when stderr is a terminal, so logs and pipes stay clean (the
/// JSON report is `--report`'s). The text comes from pure functions the tests read.
final class BootProgressView: @unchecked Sendable {
    private let enabled: Bool
    var isEnabled: Bool { enabled }
    private let lock = NSLock()
    private var bufferingLineShown = false

    init(enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.enabled = enabled
    }

    /// For `StreamBootSession.Options.onProgress`.
    var handler: @Sendable (StreamBootSession.Milestone, StreamBootSession.Live.Counters) -> Void {
        { [self] milestone, counters in show(milestone, counters) }
    }

    func show(_ milestone: StreamBootSession.Milestone, _ counters: StreamBootSession.Live.Counters) {
        guard enabled else { return }
        lock.withLock {
            switch milestone {
            case .buffering:
                write("\r\u{1B}[K" + Self.bufferingLine(counters))
                bufferingLineShown = true
            case .guestStarted:
                write((bufferingLineShown ? "\r\u{1B}[K" : "") + Self.startedLine(counters) + "\r\n")
                bufferingLineShown = false
            case .ready:
                // The guest's console shares the terminal: start on a fresh line.
                write("\r\n" + Self.readyLine(counters) + "\r\n")
            }
        }
    }

    /// The closing summary (after the guest's console has ended).
    func finish(reason: String, _ counters: StreamBootSession.Live.Counters) {
        guard enabled else { return }
        lock.withLock { write("\r\n" + Self.endLine(reason: reason, counters) + "\n") }
    }

    private func write(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }

    // MARK: Lines

    static func bufferingLine(_ c: StreamBootSession.Live.Counters) -> String {
        let rate = c.elapsedSeconds > 0 ? Double(c.bytesReceived) / c.elapsedSeconds : 0
        var line = "streamvm: buffering \(bytes(c.bufferedBytes)) of \(bytes(c.bufferTargetBytes)) · \(bytes(Int(rate)))/s"
        let left = max(0, c.bufferTargetBytes - c.bufferedBytes)
        if rate > 0, left > 0 { line += " · ETA " + seconds(Double(left) / rate) }
        return line
    }

    static func startedLine(_ c: StreamBootSession.Live.Counters) -> String {
        var line = "streamvm: guest started after " + seconds(c.startSeconds ?? c.elapsedSeconds)
        line += " · \(bytes(c.bufferedBytes)) buffered"
        if c.cachedChunks > 0 { line += " · \(c.cachedChunks) chunks (\(bytes(c.cachedBytes))) from the local cache" }
        return line
    }

    static func readyLine(_ c: StreamBootSession.Live.Counters) -> String {
        "streamvm: ready after " + seconds(c.readySeconds ?? c.elapsedSeconds) + " · " + received(c) + " · " + stalls(c)
    }

    static func endLine(reason: String, _ c: StreamBootSession.Live.Counters) -> String {
        var line = "streamvm: ended (\(reason)) after " + seconds(c.elapsedSeconds)
        line += " · started " + (c.startSeconds.map(seconds) ?? "never")
        line += " · ready " + (c.readySeconds.map(seconds) ?? "never")
        line += " · " + received(c) + " · " + stalls(c)
        line += " · cache hits \(c.cachedChunks) chunks (\(bytes(c.cachedBytes)))"
        return line
    }

    /// Received counts every response byte (catalogue, manifest and protocol too), so a run that
    /// read its whole image shows a little more than the image.
    private static func received(_ c: StreamBootSession.Live.Counters) -> String {
        "received \(bytes(c.bytesReceived)) of a \(bytes(c.imageBytes)) image"
    }

    private static func stalls(_ c: StreamBootSession.Live.Counters) -> String {
        "\(c.stalls) stall\(c.stalls == 1 ? "" : "s") (" + seconds(c.stallSeconds) + ")"
    }

    /// Decimal units, to one decimal: 34.8 kB, 7.9 MB, 1.2 GB.
    static func bytes(_ count: Int) -> String {
        let value = Double(count)
        if value < 1e3 { return "\(count) B" }
        if value < 1e6 { return String(format: "%.1f kB", value / 1e3) }
        if value < 1e9 { return String(format: "%.1f MB", value / 1e6) }
        return String(format: "%.1f GB", value / 1e9)
    }

    private static func seconds(_ value: Double) -> String { String(format: "%.2f s", value) }
}
