import Foundation
import Catalog
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient

/// Debian's nginx serving a catalogue directory on loopback with cleartext HTTP/2 (prior knowledge),
/// or HTTP/2 over TLS when given a certificate, started from a generated configuration in its own
/// temp directory: the static origin for benchmarks and real-peer tests. `init` returns nil when
/// nginx is not installed. The child is stopped by its PID (`SpawnedProcess`), also when starting fails.
public final class NginxProcess: @unchecked Sendable {
    public static let executable = ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// A certificate and key (PEM files) for an https origin.
    public struct TLSFiles: Sendable {
        public var certificate: String
        public var key: String
        public init(certificate: String, key: String) {
            self.certificate = certificate
            self.key = key
        }
    }

    public let port: UInt16
    public let isTLS: Bool
    private let process: SpawnedProcess
    private let prefix: String

    public var url: String { "\(isTLS ? "https" : "http")://127.0.0.1:\(port)" }
    public var pid: pid_t { process.pid }

    public init?(root: String, http2: Bool = true, tls: TLSFiles? = nil) throws {
        guard let executable = Self.executable else { return nil }
        // nginx resolves a relative root against its prefix (the temp directory), not our cwd.
        let root = URL(fileURLWithPath: root).standardizedFileURL.path
        var template = Array("/tmp/streamvm-nginx-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ClientError.io(path: "/tmp/streamvm-nginx-XXXXXX", errno: errno)
        }
        prefix = String(cString: made)
        chmod(prefix, 0o755)
        port = try Self.freePort()
        isTLS = tls != nil
        let prefix = self.prefix
        let listen = "127.0.0.1:\(port)" + (tls != nil ? " ssl" : "") + (http2 ? " http2" : "")
        let certificates = tls.map { "ssl_certificate \($0.certificate);\n        ssl_certificate_key \($0.key);" } ?? ""
        let config = """
        daemon off;
        master_process off;
        worker_processes 1;
        pid \(prefix)/nginx.pid;
        error_log \(prefix)/error.log warn;
        events { worker_connections 256; }
        http {
            log_format streamvm '$remote_addr [$time_local] "$request" $status $body_bytes_sent connection=$connection';
            access_log \(prefix)/access.log streamvm;
            client_body_temp_path \(prefix)/body;
            proxy_temp_path \(prefix)/proxy;
            fastcgi_temp_path \(prefix)/fastcgi;
            uwsgi_temp_path \(prefix)/uwsgi;
            scgi_temp_path \(prefix)/scgi;
            types { application/json json; }
            default_type application/octet-stream;
            server {
                listen \(listen);
                \(certificates)
                root \(root);
                location / { try_files $uri =404; }
            }
        }
        """
        try config.write(toFile: "\(prefix)/nginx.conf", atomically: true, encoding: .utf8)
        do {
            process = try SpawnedProcess(executable: executable, arguments: ["-p", prefix, "-c", "\(prefix)/nginx.conf"],
                                         logPath: "\(prefix)/stderr.log")
        } catch {
            try? FileManager.default.removeItem(atPath: prefix)
            throw error
        }
        // Wait until it accepts connections (a few milliseconds normally; 10 s at most).
        for _ in 0..<1000 {
            if Self.accepts(port) { return }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        let log = ["error.log", "stderr.log"].compactMap { try? String(contentsOfFile: "\(prefix)/\($0)", encoding: .utf8) }.joined()
        process.stop()
        try? FileManager.default.removeItem(atPath: prefix)
        throw ClientError.benchmark("nginx did not start on port \(port): \(log)")
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: prefix)
    }

    /// Stops nginx by its PID: SIGTERM, then SIGKILL after a grace period. Bounded and idempotent.
    public func stop() { process.stop() }

    public var isRunning: Bool { process.isRunning }

    /// Lines of nginx's access log (one per request).
    public var accessLog: [String] {
        ((try? String(contentsOfFile: "\(prefix)/access.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// How many requests each client connection carried, by nginx's connection serial number.
    public var requestsPerConnection: [Int: Int] {
        var counts: [Int: Int] = [:]
        for line in accessLog {
            guard let range = line.range(of: " connection="), let serial = Int(line[range.upperBound...]) else { continue }
            counts[serial, default: 0] += 1
        }
        return counts
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
