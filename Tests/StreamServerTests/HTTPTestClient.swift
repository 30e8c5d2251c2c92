import Foundation
import TestSupport
import NIOCore
import NIOHTTP1
import Testing
@testable import StreamServer

/// One HTTP/1.1 request over a fresh connection, sending the target exactly as given (no
/// normalisation), which is what path-attack tests need.
func request(_ server: RunningServer, _ method: HTTPMethod = .GET, _ target: String, headers: [(String, String)] = [],
             body: [UInt8]? = nil) async throws -> HTTP1Connection.Reply {
    try await HTTP1Connection.with(host: "127.0.0.1", port: server.port) { connection in
        try await connection.send(method, path: target, headers: headers, body: body.map { ByteBuffer(bytes: $0) }, replyLimit: 64 << 20)
    }
}




/// Runs curl (used for HTTP/2: h2c with prior knowledge and h2 over TLS) and returns its output.
func curl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await offPool { try runCurl(arguments) }
}

/// Sends `raw` on a fresh TCP connection and returns every byte the server sends until it closes.
func rawExchange(port: Int, _ raw: String) async throws -> [UInt8] {
    try await offPool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return [] }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = raw.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            received += buffer[0..<n]
        }
        return received
    }
}

private func runCurl(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["--silent", "--show-error", "--max-time", "20"] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}
