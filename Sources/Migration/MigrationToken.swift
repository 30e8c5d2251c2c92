import Foundation

/// Secrets of a migration. The listener's token (from a file both hosts hold, never a command line)
/// lets a source hand a machine over; each offer carries a fresh page token, part of the page URLs,
/// that lets exactly that destination read the paused machine's memory.
public enum MigrationToken {
    /// Random bytes in a page token (hex-encoded in URLs).
    static let pageTokenBytes = 32

    /// A fresh random page token, 64 hex digits, from the kernel's CSPRNG (Swift's system generator
    /// is getrandom(2) on Linux).
    static func makePageToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<pageTokenBytes).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &generator)) }.joined()
    }

    /// Reads a token file: one line of printable ASCII without spaces, at least 16 characters.
    public static func read(file path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MigrationError.tokenFile(path: path, problem: "cannot be read")
        }
        guard let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
              text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw MigrationError.tokenFile(path: path, problem: "must hold one line of printable ASCII without spaces")
        }
        guard text.utf8.count >= 16 else { throw MigrationError.tokenFile(path: path, problem: "the token has \(text.utf8.count) characters; use at least 16") }
        return text
    }

    /// Compares two tokens in time independent of where they differ.
    static func matches(_ given: Substring, _ expected: String) -> Bool {
        let a = Array(given.utf8), b = Array(expected.utf8)
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
