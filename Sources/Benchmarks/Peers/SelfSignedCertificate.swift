import Catalog
import Foundation
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient

/// A throwaway certificate for 127.0.0.1, made with the openssl command-line tool, so benchmarks can
/// measure HTTP/2 over TLS (where libcurl 7.88 reuses one multiplexed connection) next to h2c.
public enum SelfSignedCertificate {
    /// Writes `cert.pem` and `key.pem` into `directory` and returns their paths.
    public static func make(in directory: String) throws -> NginxProcess.TLSFiles {
        let openssl = "/usr/bin/openssl"
        guard FileManager.default.isExecutableFile(atPath: openssl) else {
            throw ClientError.benchmark("openssl is not installed (apt-get install openssl); it makes the TLS origin's certificate")
        }
        try AtomicFile.makeDirectories(directory)
        let files = NginxProcess.TLSFiles(certificate: "\(directory)/cert.pem", key: "\(directory)/key.pem")
        _ = try SpawnedProcess.runChecked(openssl, arguments: [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", files.key, "-out", files.certificate,
        ])
        // nginx workers (not root when nginx does not start as root) read the key too.
        chmod(files.key, 0o644)
        return files
    }
}
