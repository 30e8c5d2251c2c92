import Catalog
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOPosix

/// Stores access traces that clients upload after a run, for the learner. Traces are not catalogue
/// objects: they live outside the catalogue directory and are never served.
public final class TraceStore: Sendable {
    /// Larger trace bodies are refused (a trace of a 1M-chunk run in compact JSON fits well below this).
    public static let maximumTraceBytes = 16 << 20

    public let root: String
    private let threadPool: NIOThreadPool

    public init(root: String, threadPool: NIOThreadPool = .singleton) {
        self.root = (root as NSString).standardizingPath
        self.threadPool = threadPool
    }

    /// The default place for traces: `traces/` beside the catalogue directory.
    public static func defaultRoot(forCatalog catalog: String) -> String {
        // A relative catalogue path ("cat") must not turn into "/traces" at the file system root.
        let absolute = catalog.hasPrefix("/") ? catalog : FileManager.default.currentDirectoryPath + "/" + catalog
        return ((absolute as NSString).standardizingPath as NSString).deletingLastPathComponent + "/traces"
    }

    public enum Outcome: Equatable, Sendable {
        case stored(name: String)
        case rejected(String)
    }

    /// Stores `body` for `appliance` (a name already checked by `ApplianceConfig.validateName`).
    public func store(appliance: String, body: ByteBuffer) async throws -> Outcome {
        try ApplianceConfig.validateName(appliance, what: "appliance name", file: "trace upload")
        let data = body.getData(at: body.readerIndex, length: body.readableBytes) ?? Data()
        guard let json = try? JSONSerialization.jsonObject(with: data), json is [String: Any] || json is [Any] else {
            return .rejected("a trace must be a JSON object or array")
        }
        let stamp = Self.timestamp()
        let name = "\(stamp)-\(String(UInt64.random(in: 0...UInt64.max), radix: 16)).json"
        let path = "\(root)/\(appliance)/\(name)"
        try await threadPool.runIfActive { try AtomicFile.write(data, to: path, mode: 0o640) }
        return .stored(name: "\(appliance)/\(name)")
    }

    /// UTC time in a form that sorts by time and is safe in file names.
    private static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }
}
