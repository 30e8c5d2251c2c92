import Foundation

/// nginx serving the same catalogue directory as plain files over h2c or h2 (TLS), the reference the
/// issue measures against. Debian 12's nginx 1.22 speaks HTTP/2 with prior knowledge on a plaintext
/// listener marked `http2`, and h2 by ALPN on one marked `ssl http2`.
struct NginxReference {
    static let defaultExecutable = "/usr/sbin/nginx"

    /// A configuration tuned the way a static file origin would be: sendfile, open-file cache,
    /// no access log (the server under test logs no requests either), one worker per core.
    static func configuration(root: String, port: Int, workDirectory: String, workers: Int?, tls: TLSFiles?) -> String {
        let listen = tls == nil ? "listen 127.0.0.1:\(port) http2;" : """
        listen 127.0.0.1:\(port) ssl http2;
                ssl_certificate \(tls!.certificate);
                ssl_certificate_key \(tls!.key);
                ssl_protocols TLSv1.2 TLSv1.3;
                ssl_session_cache shared:SSL:10m;
        """
        return """
        worker_processes \(workers.map(String.init) ?? "auto");
        daemon off;
        master_process on;
        user root;
        pid \(workDirectory)/nginx.pid;
        error_log \(workDirectory)/nginx-error.log warn;
        events { worker_connections 4096; }
        http {
            access_log off;
            sendfile on;
            tcp_nopush on;
            tcp_nodelay on;
            keepalive_requests 1000000;
            http2_max_requests 1000000;
            open_file_cache max=100000 inactive=60s;
            types { application/zstd zst; application/json json; }
            default_type application/octet-stream;
            client_body_temp_path \(workDirectory)/nginx-body;
            proxy_temp_path \(workDirectory)/nginx-proxy;
            fastcgi_temp_path \(workDirectory)/nginx-fastcgi;
            uwsgi_temp_path \(workDirectory)/nginx-uwsgi;
            scgi_temp_path \(workDirectory)/nginx-scgi;
            server {
                \(listen)
                root \(root);
                etag on;
                location / { add_header Cache-Control "public, max-age=31536000, immutable"; }
            }
        }

        """
    }

    /// A certificate and key in PEM files, for the TLS variant.
    struct TLSFiles {
        let certificate: String
        let key: String
    }

    /// `workers` nil: one per core (`auto`); set it when the servers are pinned to fewer cores than
    /// the host has, since nginx counts the host's cores, not the ones it may use.
    static func start(executable: String, root: String, port: Int, workDirectory: String, workers: Int?, tls: TLSFiles?, cpus: String?) throws -> ChildProcess {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw ServerError.benchmarkFailed("\(executable) not found; install Debian's nginx-light (apt-get install nginx-light)")
        }
        let configPath = "\(workDirectory)/nginx.conf"
        try configuration(root: root, port: port, workDirectory: workDirectory, workers: workers, tls: tls)
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        return try ChildProcess(executable, arguments: ["-c", configPath, "-p", workDirectory, "-e", "\(workDirectory)/nginx-error.log"],
                                logFile: "\(workDirectory)/nginx-stdout.log", cpus: cpus)
    }
}
