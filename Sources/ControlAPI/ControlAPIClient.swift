import Foundation
import Glibc

/// The client side of the control API, for `streamvm ps|stop|pause|resume`: plain HTTP/1.1 over the
/// Unix socket, one request per connection (`Connection: close`), the answer read until the server
/// closes, with a receive timeout so a wedged VMM cannot hang `ps`. What the VMM sends is hostile
/// input like any other: the reply is size-limited and parsed defensively.
public struct ControlAPIClient: Sendable {
    public struct Reply: Sendable {
        public var status: Int
        public var body: Data

        /// The body as a JSON object ([:] when it is not one).
        public var json: [String: Any] {
            ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:]
        }

        /// Firecracker's error body, `{"fault_message": …}`.
        public var fault: String? { json["fault_message"] as? String }
    }

    /// A reply larger than this is not one the API sends (metrics are a few KiB).
    public static let maximumReplyBytes = 1 << 20

    public let socketPath: String
    public let timeoutSeconds: Int

    public init(socketPath: String, timeoutSeconds: Int = 5) {
        self.socketPath = socketPath
        self.timeoutSeconds = timeoutSeconds
    }

    public func send(_ method: String, _ path: String, json body: String? = nil) throws(ControlAPIClientError) -> Reply {
        let fd = try connect()
        defer { close(fd) }
        var request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if let body {
            request += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        } else {
            request += "Content-Length: 0\r\n\r\n"
        }
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw failure("cannot send the request") }
            sent += count
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0, errno == EINTR { continue }
            if count < 0 { throw failure(errno == EAGAIN ? "no answer within \(timeoutSeconds) s" : "cannot read the answer") }
            if count == 0 { break }
            received += buffer[0..<count]
            guard received.count <= Self.maximumReplyBytes else { throw failure("answer larger than \(Self.maximumReplyBytes) bytes") }
        }
        return try parse(received)
    }

    /// Whether something accepts connections on the socket (a live VMM), without a request.
    public func accepts() -> Bool {
        guard let fd = try? connect() else { return false }
        close(fd)
        return true
    }

    private func connect() throws(ControlAPIClientError) -> Int32 {
        var address = sockaddr_un()
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else { throw failure("path too long for a Unix socket") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket") }
        var limit = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let error = failure("cannot connect")
            close(fd)
            throw error
        }
        return fd
    }

    /// Status line, headers (Content-Length or chunked), body.
    private func parse(_ bytes: [UInt8]) throws(ControlAPIClientError) -> Reply {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headerEnd = bytes.firstRange(of: separator) else { throw failure("the answer is not HTTP") }
        let head = String(decoding: bytes[..<headerEnd.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusWords = head.first?.split(separator: " ") ?? []
        guard statusWords.count >= 2, statusWords[0].hasPrefix("HTTP/1."), let status = Int(statusWords[1]), (100...599).contains(status) else {
            throw failure("bad status line '\(head.first?.prefix(60) ?? "")'")
        }
        var chunked = false
        for line in head.dropFirst() {
            let lower = line.lowercased()
            if lower.hasPrefix("transfer-encoding:"), lower.contains("chunked") { chunked = true }
        }
        var body = Array(bytes[headerEnd.upperBound...])
        if chunked { body = try dechunk(body) }
        return Reply(status: status, body: Data(body))
    }

    private func dechunk(_ bytes: [UInt8]) throws(ControlAPIClientError) -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        let lineEnd: [UInt8] = [13, 10]
        while index < bytes.count {
            guard let end = bytes[index...].firstRange(of: lineEnd) else { throw failure("truncated chunked body") }
            let sizeText = String(decoding: bytes[index..<end.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else { throw failure("bad chunk size") }
            if size == 0 { return out }
            let start = end.upperBound
            guard start + size <= bytes.count else { throw failure("truncated chunk") }
            out += bytes[start..<(start + size)]
            index = start + size + 2
        }
        return out
    }

    private func failure(_ problem: String) -> ControlAPIClientError {
        let code = errno
        let detail = code != 0 && problem.hasPrefix("cannot") || problem == "socket" ? ": \(String(cString: strerror(code)))" : ""
        return ControlAPIClientError(socketPath: socketPath, problem: problem + detail)
    }
}

/// The control API at a socket could not be reached or answered nonsense.
public struct ControlAPIClientError: Error, CustomStringConvertible, Sendable {
    public var socketPath: String
    public var problem: String
    public init(socketPath: String, problem: String) {
        self.socketPath = socketPath
        self.problem = problem
    }
    public var description: String { "\(socketPath): \(problem)" }
}
