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
/// Debian 12's nginx 1.22 speaks HTTP/2 with prior knowledge on a plaintext listener marked `http2`,
/// and h2 by ALPN on one marked `ssl http2`.
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

    /// How nginx is set up for its role.
    public enum Tuning: Sendable {
        /// A real-peer test: one process (no master), an access log the test reads.
        case test
        /// The reference `bench serve` measures against, tuned as a static-file origin would be:
        /// master and `workers` worker processes (nil: one per host core; set it when nginx is
        /// pinned to fewer cores, since nginx counts the host's), sendfile, open-file cache, no
        /// access log (the server under test logs no requests either), immutable caching headers.
        case benchmark(workers: Int?)
    }

    public let port: UInt16
    public let isTLS: Bool
    private let process: SpawnedProcess
    private let prefix: String

    public var url: String { "\(isTLS ? "https" : "http")://127.0.0.1:\(port)" }
    /// nginx's own pid (the master's under `.benchmark`; its workers are its children).
    public var pid: pid_t { process.pid }

    /// `cpus`: a taskset CPU list nginx (master and workers) is pinned to; nil: not pinned.
    public init?(root: String, http2: Bool = true, tls: TLSFiles? = nil, tuning: Tuning = .test, cpus: String? = nil) throws {
        guard let executable = Self.executable else { return nil }
        // nginx resolves a relative root against its prefix (the temp directory), not our cwd.
        let root = URL(fileURLWithPath: root).standardizedFileURL.path
        var template = Array("/tmp/streamvm-nginx-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ClientError.io(path: "/tmp/streamvm-nginx-XXXXXX", errno: errno)
        }
        prefix = String(cString: made)
        chmod(prefix, 0o755)
        port = try LoopbackPort.free()
        isTLS = tls != nil
        let config = Self.configuration(prefix: prefix, root: root, port: port, http2: http2, tls: tls, tuning: tuning)
        do {
            try AtomicFile.write(Data(config.utf8), to: "\(prefix)/nginx.conf")
            process = try SpawnedProcess(executable: executable, arguments: ["-p", prefix, "-c", "\(prefix)/nginx.conf", "-e", "\(prefix)/error.log"],
                                         logPath: "\(prefix)/stderr.log", cpus: cpus)
        } catch {
            try? FileManager.default.removeItem(atPath: prefix)
            throw error
        }
        // Wait until it accepts connections (a few milliseconds normally; 30 s at most).
        do {
            try LoopbackPort.waitUntilAccepting(port, process: process, timeout: 30)
            return
        } catch {}
        let log = ["error.log", "stderr.log"].compactMap { try? String(contentsOfFile: "\(prefix)/\($0)", encoding: .utf8) }.joined()
        process.stop()
        try? FileManager.default.removeItem(atPath: prefix)
        throw ClientError.benchmark("nginx did not start on port \(port): \(log)")
    }

    /// The configuration file for `tuning`; every path nginx writes is under `prefix`.
    static func configuration(prefix: String, root: String, port: UInt16, http2: Bool, tls: TLSFiles?, tuning: Tuning) -> String {
        let listen = "127.0.0.1:\(port)" + (tls != nil ? " ssl" : "") + (http2 ? " http2" : "")
        var tlsLines = tls.map { "ssl_certificate \($0.certificate);\n        ssl_certificate_key \($0.key);" } ?? ""
        let processes: String, http: String, location: String
        switch tuning {
        case .test:
            processes = "master_process off;\nworker_processes 1;\nevents { worker_connections 256; }"
            http = """
                log_format streamvm '$remote_addr [$time_local] "$request" $status $body_bytes_sent connection=$connection';
                access_log \(prefix)/access.log streamvm;
            """
            location = "location / { try_files $uri =404; }"
        case let .benchmark(workers):
            // `user root`: workers of a master started as root would otherwise run as nobody.
            processes = "master_process on;\nuser root;\nworker_processes \(workers.map(String.init) ?? "auto");\nevents { worker_connections 4096; }"
            http = """
                access_log off;
                sendfile on;
                tcp_nopush on;
                tcp_nodelay on;
                keepalive_requests 1000000;
                http2_max_requests 1000000;
                open_file_cache max=100000 inactive=60s;
            """
            location = "etag on;\n        location / { add_header Cache-Control \"public, max-age=31536000, immutable\"; }"
            if tls != nil { tlsLines += "\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;" }
        }
        return """
        daemon off;
        \(processes)
        pid \(prefix)/nginx.pid;
        error_log \(prefix)/error.log warn;
        http {
        \(http)
            client_body_temp_path \(prefix)/body;
            proxy_temp_path \(prefix)/proxy;
            fastcgi_temp_path \(prefix)/fastcgi;
            uwsgi_temp_path \(prefix)/uwsgi;
            scgi_temp_path \(prefix)/scgi;
            types { application/zstd zst; application/json json; }
            default_type application/octet-stream;
            server {
                listen \(listen);
                \(tlsLines)
                root \(root);
                \(location)
            }
        }

        """
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
}
