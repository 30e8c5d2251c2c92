import Catalog
import Foundation

/// Sends a finished run's trace to `POST /v1/traces/<appliance>` on an origin, with the upload token
/// as a bearer credential: one blocking `HTTPPost` over HTTP/1.1 (a trace is one small body, sent
/// once after the run), on the calling thread: call it off the Swift concurrency pool.
public struct TraceUploader: Sendable {
    /// A trace upload that takes longer than this is abandoned (the run is over; nothing waits on it).
    public static let timeoutSeconds = 30

    public let origin: Origin
    /// The bearer token, as read from the token file (never put on a command line).
    private let token: String
    public var caFile: String?

    public init(origin: Origin, tokenFile: String) throws {
        guard let data = FileManager.default.contents(atPath: tokenFile),
              let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
              !text.isEmpty, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw ClientError.io(path: tokenFile, errno: EINVAL)
        }
        self.origin = origin
        self.token = text
    }

    /// Uploads `trace`; returns the server's one-line answer, throws on any status but 201.
    @discardableResult
    public func upload(_ trace: RunTrace) throws -> String {
        let url = "\(origin.baseURL)/v1/traces/\(trace.appliance)"
        let post = HTTPPost(url: url, body: try trace.encoded(), bearerToken: token, timeoutSeconds: Self.timeoutSeconds, caFile: caFile)
        let answer: HTTPPost.Answer
        do {
            answer = try post.perform()
        } catch ClientError.curl(let problem) {
            throw ClientError.curl("trace upload: \(problem)")
        }
        guard answer.status == 201 else { throw ClientError.traceRefused(url: url, status: answer.status, message: answer.summary) }
        return answer.summary
    }
}
