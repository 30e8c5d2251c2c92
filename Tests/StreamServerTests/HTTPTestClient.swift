import Foundation
import NIOCore
import NIOHTTP1
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
func curl(_ arguments: [String]) throws -> (status: Int32, output: String) {
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
