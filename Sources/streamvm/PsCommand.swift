import ArgumentParser
import ControlAPI
import Foundation

/// `streamvm ps`: the appliances running on this host, from the runtime directory's registrations
/// and each one's control API (GET / and GET /metrics). Stale entries (their VMM died) are shown
/// as `stale` and removed with `--prune`.
struct PsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "List the appliances running on this host (registered with --name or --api-socket).",
        discussion: """
            Columns: NAME, APPLIANCE, VERSION, STATE, UPTIME, RSS (the VMM process's resident memory), \
            DEDUP-SAVED, TDF (time dilation factor) and STREAM (bytes streamed, stalls) when the \
            instance's metrics carry them, else '-'.
            """)

    @OptionGroup var runtime: RuntimeDirectoryOption

    @OptionGroup var configFile: ConfigFileOption

    @Flag(help: "Remove stale entries (their process is gone or their socket refuses connections).")
    var prune = false

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct Row: Encodable {
        var name: String
        var appliance: String
        var version: String
        var state: String
        var uptimeSeconds: Double?
        var residentBytes: Int?
        var dedupSavedBytes: Double?
        var timeDilationFactor: Double?
        var streamedBytes: Double?
        var streamStalls: Double?
        var pid: Int32?
        var socket: String?
        var problem: String?
    }

    func run() throws {
        let directory = RuntimeDirectory(path: runtime.resolve(try configFile.load().file).value)
        let rows = try directory.entries().map { entry -> Row in
            if !entry.isLive, prune { directory.prune(entry) }
            return Self.row(entry)
        }
        if json {
            try printJSON(rows)
            return
        }
        var table = [["NAME", "APPLIANCE", "VERSION", "STATE", "UPTIME", "RSS", "DEDUP-SAVED", "TDF", "STREAM"]]
        for row in rows {
            let stream = row.streamedBytes.map { "\(HumanUnits.bytes($0)), \(Int(row.streamStalls ?? 0)) stalls" } ?? "-"
            table.append([row.name, row.appliance, row.version, row.state, row.uptimeSeconds.map(HumanUnits.duration) ?? "-",
                          row.residentBytes.map { HumanUnits.bytes(Double($0)) } ?? "-", row.dedupSavedBytes.map(HumanUnits.bytes) ?? "-",
                          row.timeDilationFactor.map { String(format: "%.1f", $0) } ?? "-", stream])
        }
        let widths = (0..<table[0].count).map { column in table.map { $0[column].count }.max() ?? 0 }
        for line in table {
            print(zip(line, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces))
        }
        for row in rows where row.problem != nil {
            FileHandle.standardError.write(Data("streamvm: \(row.name): \(row.problem!)\(prune ? " (removed)" : " (--prune removes it)")\n".utf8))
        }
    }

    static func row(_ entry: RuntimeDirectory.Entry) -> Row {
        let fileName = ((entry.file as NSString).lastPathComponent as NSString).deletingPathExtension
        guard let registration = entry.registration else {
            return Row(name: fileName, appliance: "-", version: "-", state: "invalid", problem: entry.problem)
        }
        var row = Row(name: registration.name, appliance: registration.appliance, version: registration.version, state: "stale",
                      pid: registration.pid, socket: registration.socket, problem: entry.problem)
        guard entry.isLive else { return row }
        row.residentBytes = InstanceProcess.residentBytes(pid: registration.pid)
        let client = ControlAPIClient(socketPath: registration.socket)
        do {
            let info = try client.send("GET", "/")
            guard info.status == 200 else { throw ControlAPIClientError(socketPath: registration.socket, problem: "GET / answered \(info.status)") }
            let fields = info.json
            row.state = (fields["state"] as? String).map { $0.lowercased() } ?? "-"
            row.uptimeSeconds = (fields["uptime_s"] as? NSNumber)?.doubleValue
            let metrics = try client.send("GET", "/metrics")
            if metrics.status == 200 {
                let samples = PrometheusText.samples(String(decoding: metrics.body, as: UTF8.self))
                row.dedupSavedBytes = samples["streamvm_dedup_saved_bytes"]
                row.timeDilationFactor = samples["streamvm_vm_time_dilation_factor"]
                row.streamedBytes = samples["streamvm_stream_received_bytes_total"]
                row.streamStalls = samples["streamvm_stream_stalls_total"]
            }
        } catch {
            row.state = "unreachable"
            row.problem = "\(error)"
        }
        return row
    }
}

/// Sums of samples per metric name from Prometheus text (labels summed away): enough for `ps`.
enum PrometheusText {
    static func samples(_ text: String) -> [String: Double] {
        var sums: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, let value = Double(parts[parts.count - 1]) ?? Double(parts[1]), value.isFinite else { continue }
            let name = String(parts[0].prefix { $0 != "{" })
            sums[name, default: 0] += value
        }
        return sums
    }
}

/// Sizes and durations as people read them.
enum HumanUnits {
    static func bytes(_ value: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var scaled = value
        var unit = 0
        while scaled >= 1024, unit < units.count - 1 { scaled /= 1024; unit += 1 }
        return unit == 0 ? "\(Int(scaled))B" : String(format: "%.1f", scaled) + units[unit]
    }

    static func duration(_ seconds: Double) -> String {
        let whole = Int(seconds)
        if whole < 60 { return "\(whole)s" }
        if whole < 3600 { return "\(whole / 60)m\(whole % 60)s" }
        if whole < 86400 { return "\(whole / 3600)h\(whole % 3600 / 60)m" }
        return "\(whole / 86400)d\(whole % 86400 / 3600)h"
    }
}
