/// The words of the first console line a test guest printed that starts with `prefix` (its closing
/// report, e.g. `diskrate bytes B requests N cycles C tsc_khz K`); empty when there is none.
enum GuestReportLine {
    static func words(_ console: String, prefix: String) -> [String] {
        guard let line = console.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix(prefix) }) else { return [] }
        return line.split(separator: " ").map(String.init)
    }
}
