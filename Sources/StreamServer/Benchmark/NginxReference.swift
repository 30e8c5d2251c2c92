import Foundation

/// nginx serving the same catalogue directory as plain files over h2c, the reference the issue
/// measures against. Debian 12's nginx 1.22 speaks HTTP/2 with prior knowledge on a plaintext
/// listener marked `http2`.
struct NginxReference {
    static let defaultExecutable = "/usr/sbin/nginx"

    /// A configuration tuned the way a static file origin would be: sendfile, open-file cache,
    /// no access log (the server under test logs no requests either), one worker per core.
    static func configuration(root: String, port: Int, workDirectory: String) -> String {
        """
        worker_processes auto;
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
                listen 127.0.0.1:\(port) http2;
                root \(root);
                etag on;
                location / { add_header Cache-Control "public, max-age=31536000, immutable"; }
            }
        }

        """
    }

    static func start(executable: String, root: String, port: Int, workDirectory: String) throws -> ChildProcess {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw ServerError.benchmarkFailed("\(executable) not found; install Debian's nginx-light (apt-get install nginx-light)")
        }
        let configPath = "\(workDirectory)/nginx.conf"
        try configuration(root: root, port: port, workDirectory: workDirectory).write(toFile: configPath, atomically: true, encoding: .utf8)
        return try ChildProcess(executable, arguments: ["-c", configPath, "-p", workDirectory, "-e", "\(workDirectory)/nginx-error.log"],
                                logFile: "\(workDirectory)/nginx-stdout.log")
    }
}
