import Catalog
import Foundation

/// How every `bench` command hands over its result: the JSON report on stdout (and, with `--json`,
/// in that file, written atomically), then the Markdown table people read.
enum BenchReportOutput {
    static func emit<Report: Encodable>(_ report: Report, table: String, json: String?, snakeCaseKeys: Bool = false) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if snakeCaseKeys { encoder.keyEncodingStrategy = .convertToSnakeCase }
        let data = try encoder.encode(report)
        print(String(decoding: data, as: UTF8.self))
        if let json { try AtomicFile.write(data, to: json) }
        print("\n" + table, terminator: "")
    }
}
