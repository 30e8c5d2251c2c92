import Foundation

/// The bearer token that authorises writes. Kept in a file so it never appears in a process list.
public struct UploadToken: Sendable {
    /// Shorter tokens are refused: they could be guessed (16 bytes of base64 is ~96 bits).
    public static let minimumLength = 16
    public static let maximumLength = 4096

    private let secret: [UInt8]

    public init(_ text: String, source: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (Self.minimumLength...Self.maximumLength).contains(trimmed.utf8.count),
              trimmed.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw ServerError.invalidTokenFile(path: source, problem: "the token must be \(Self.minimumLength)-\(Self.maximumLength) printable ASCII characters without spaces")
        }
        secret = Array(trimmed.utf8)
    }

    public init(file path: String) throws {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ServerError.invalidTokenFile(path: path, problem: "cannot read the file")
        }
        try self.init(text, source: path)
    }

    public var headerValue: String { "Bearer " + String(decoding: secret, as: UTF8.self) }

    /// How an `Authorization` header compares to this token.
    public enum Check: Equatable, Sendable {
        case accepted
        /// No bearer credentials at all: 401 with a challenge.
        case missing
        /// Credentials that are not this token: 403.
        case wrong
    }

    public func check(authorization: String?) -> Check {
        guard let authorization else { return .missing }
        let scheme = "bearer "
        guard authorization.utf8.count > scheme.utf8.count,
              authorization.prefix(scheme.count).lowercased() == scheme else { return .missing }
        let presented = Array(authorization.utf8.dropFirst(scheme.utf8.count))
        return Self.constantTimeEqual(presented, secret) ? .accepted : .wrong
    }

    /// Compares without an early exit, so response timing does not reveal how much of a guess was right.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}
