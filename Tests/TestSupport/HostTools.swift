import Foundation
import Testing

/// Peers that some tests run against, found on this host. A test that needs one declares it with
/// `.enabled(if: HostTools.hasNginx, "…")`, so a missing peer is reported as a skip, never as a pass
/// (`scripts/install-deps.sh` installs them all, so CI runs every such test).
public enum HostTools {
    public static let nginx = firstExecutable(["/usr/sbin/nginx", "/usr/bin/nginx"])
    public static let openssl = firstExecutable(["/usr/bin/openssl"])
    public static let h2load = firstExecutable(["/usr/bin/h2load"])

    public static let systemdAnalyze = firstExecutable(["/usr/bin/systemd-analyze", "/bin/systemd-analyze"])

    public static var hasNginx: Bool { nginx != nil }
    public static var hasSystemdAnalyze: Bool { systemdAnalyze != nil }

    /// /dev/kvm opens read-write (for suites that cannot import the Hypervisor's own check, such as
    /// the ones that run the built binary).
    public static var hasKVM: Bool {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }
    public static var hasOpenSSL: Bool { openssl != nil }
    public static var hasH2load: Bool { h2load != nil }

    private static func firstExecutable(_ candidates: [String]) -> String? {
        candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

extension Trait where Self == ConditionTrait {
    /// The test runs nginx as a real HTTP/2 peer.
    public static var needsNginx: Self {
        .enabled(if: HostTools.hasNginx, "nginx is not installed (apt-get install nginx-light): real-peer test skipped")
    }

    /// The test drives many HTTP/2 streams with h2load (nghttp2's load generator).
    public static var needsH2load: Self {
        .enabled(if: HostTools.hasH2load, "h2load is not installed (apt-get install nghttp2-client): load test skipped")
    }

    /// The test makes a TLS certificate with the openssl tool.
    public static var needsOpenSSL: Self {
        .enabled(if: HostTools.hasOpenSSL, "openssl is not installed: TLS test skipped")
    }
}
