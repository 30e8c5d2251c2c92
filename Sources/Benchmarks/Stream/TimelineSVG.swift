import Foundation
import Catalog
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient

/// Draws the benchmark's timeline: one row per mode with the bytes received over time (a line) and
/// the guest's stalls (red bars), the ready moment marked. Plain SVG, no dependencies.
enum TimelineSVG {
    static func render(_ timelines: [StreamBenchmark.Timeline], title: String) -> String {
        let width = 900.0, rowHeight = 120.0, left = 110.0, right = 20.0, top = 40.0
        let endSeconds = max(0.001, timelines.flatMap { $0.samples.map(\.seconds) + [$0.readySeconds ?? 0] }.max() ?? 1)
        let maxBytes = max(1, timelines.flatMap { $0.samples.map(\.bytes) }.max() ?? 1)
        func x(_ seconds: Double) -> Double { left + (width - left - right) * seconds / endSeconds }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(top + rowHeight * Double(timelines.count) + 40))" font-family="sans-serif" font-size="12">
            <text x="10" y="20" font-size="14">\(escape(title))</text>

            """
        for (row, timeline) in timelines.enumerated() {
            let base = top + rowHeight * Double(row + 1) - 20
            let height = rowHeight - 30
            func y(_ bytes: Int) -> Double { base - height * Double(bytes) / Double(maxBytes) }
            svg += "<text x=\"10\" y=\"\(base - height / 2)\">\(timeline.mode.rawValue)</text>\n"
            svg += "<line x1=\"\(left)\" y1=\"\(base)\" x2=\"\(width - right)\" y2=\"\(base)\" stroke=\"#999\"/>\n"
            let points = timeline.samples.map { String(format: "%.1f,%.1f", x($0.seconds), y($0.bytes)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(points)\"/>\n"
            for stall in timeline.stalls {
                let start = x(stall.seconds), end = max(x(stall.seconds + stall.duration), start + 1)
                svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"6\" fill=\"#d62728\"/>\n", start, base + 2, end - start)
            }
            if let ready = timeline.readySeconds {
                svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2ca02c\" stroke-dasharray=\"4 2\"/>\n", x(ready), base - height, x(ready), base + 8)
                svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"#2ca02c\">READY %.2f s</text>\n", x(ready) + 4, base - height + 12, ready)
            }
        }
        let axis = top + rowHeight * Double(timelines.count) + 20
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\">0 s</text><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f s; line: bytes received (max %.1f MB); red: guest stalls</text>\n",
                      left, axis, width - right, axis, endSeconds, Double(maxBytes) / 1e6)
        return svg + "</svg>\n"
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

extension StreamBenchmark {
    /// The SVG timeline of a run's modes.
    public static func timelineSVG(_ timelines: [Timeline], title: String) -> String { TimelineSVG.render(timelines, title: title) }
}
