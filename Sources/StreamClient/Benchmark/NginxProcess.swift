import Foundation

/// Debian's nginx serving a catalogue directory on loopback with cleartext HTTP/2 (prior knowledge),
/// started from a generated configuration in its own temp directory: the static origin for
/// benchmarks and real-peer tests. `init` returns nil when nginx is not installed.
public final class NginxProcess: @unchecked Sendable {
    public static let executable = ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }

    public let port: UInt16
    private let process: Process
    private let prefix: String

    public var url: String { "http://127.0.0.1:\(port)" }

    public init?(root: String, http2: Bool = true) throws {
        guard let executable = Self.executable else { return nil }
        var template = Array("/tmp/streamvm-nginx-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ClientError.io(path: "/tmp/streamvm-nginx-XXXXXX", errno: errno)
        }
        prefix = String(cString: made)
        chmod(prefix, 0o755)
        port = try Self.freePort()
        let prefix = self.prefix
        let config = """
        daemon off;
        master_process off;
        worker_processes 1;
        pid \(prefix)/nginx.pid;
        error_log \(prefix)/error.log warn;
        events { worker_connections 256; }
        http {
            access_log \(prefix)/access.log;
            client_body_temp_path \(prefix)/body;
            proxy_temp_path \(prefix)/proxy;
            fastcgi_temp_path \(prefix)/fastcgi;
            uwsgi_temp_path \(prefix)/uwsgi;
            scgi_temp_path \(prefix)/scgi;
            types { application/json json; }
            default_type application/octet-stream;
            server {
                listen 127.0.0.1:\(port)\(http2 ? " http2" : "");
                root \(root);
                location / { try_files $uri =404; }
            }
        }
        """
        try config.write(toFile: "\(prefix)/nginx.conf", atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-p", prefix, "-c", "\(prefix)/nginx.conf"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait until it accepts connections (a few milliseconds normally).
        for _ in 0..<500 {
            if Self.accepts(port) { return }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        let log = (try? String(contentsOfFile: "\(prefix)/error.log", encoding: .utf8)) ?? ""
        process.terminate()
        try? FileManager.default.removeItem(atPath: prefix)
        throw ClientError.benchmark("nginx did not start on port \(port): \(log)")
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: prefix)
    }

    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// Lines of nginx's access log (one per request).
    public var accessLog: [String] {
        ((try? String(contentsOfFile: "\(prefix)/access.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    public static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw POSIXError(.EADDRINUSE) }
        return UInt16(bigEndian: address.sin_port)
    }

    public static func accepts(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
