import Foundation
import Testing

/// A throwaway self-signed certificate for 127.0.0.1 (openssl CLI), for https origins in tests.
public struct TestCertificate: Sendable {
    public let certificate: String
    public let key: String

    /// Writes `cert.pem` and `key.pem` into `directory`. Tests that call it declare
    /// `.enabled(if: HostTools.hasOpenSSL, …)`; without openssl this throws, it never passes silently.
    public static func make(in directory: String) async throws -> TestCertificate {
        let openssl = try #require(HostTools.openssl, "openssl is not installed (apt-get install openssl)")
        let certificate = "\(directory)/cert.pem", key = "\(directory)/key.pem"
        let status = try await offPool { () -> Int32 in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: openssl)
            process.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                 "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                                 "-keyout", key, "-out", certificate]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            return process.terminationStatus
        }
        guard status == 0 else { throw POSIXError(.EIO) }
        return TestCertificate(certificate: certificate, key: key)
    }
}
