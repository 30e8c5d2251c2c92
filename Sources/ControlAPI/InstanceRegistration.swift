import Foundation

/// What a running appliance writes about itself into the host's runtime directory
/// (`<runtime>/<name>.json`, beside its control socket), so `streamvm ps` can find it.
/// The file says where to ask; everything that changes (state, uptime, counters) comes from the API.
public struct InstanceRegistration: Codable, Sendable, Equatable {
    /// The instance's name on this host (unique among live entries): what `stop NAME` takes.
    public var name: String
    public var pid: Int32
    /// The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid
    /// it tells a live VMM from an unrelated process that reused a dead one's pid.
    public var processStart: UInt64
    /// The control API socket.
    public var socket: String
    public var appliance: String
    public var version: String
    /// `run` or `boot`.
    public var command: String
    public var started: Date

    public init(name: String, pid: Int32, processStart: UInt64, socket: String, appliance: String, version: String, command: String, started: Date) {
        self.name = name
        self.pid = pid
        self.processStart = processStart
        self.socket = socket
        self.appliance = appliance
        self.version = version
        self.command = command
        self.started = started
    }

    /// Names are file names in the runtime directory: letters, digits, `.`, `_`, `-`, not leading `.`.
    public static func isValidName(_ name: String) -> Bool {
        guard (1...maximumNameLength).contains(name.utf8.count), !name.hasPrefix(".") else { return false }
        return name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
    }

    /// Long enough for appliance names with a suffix, short enough for the socket path limit.
    public static let maximumNameLength = 48
    /// A registration is a few hundred bytes.
    static let maximumFileBytes = 16 << 10

    func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(self)
    }

    static func decode(_ data: Data, file: String) throws -> InstanceRegistration {
        guard data.count <= maximumFileBytes else { throw RuntimeDirectoryError(path: file, problem: "\(data.count) bytes is not a registration") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let registration: InstanceRegistration
        do { registration = try decoder.decode(InstanceRegistration.self, from: data) } catch {
            throw RuntimeDirectoryError(path: file, problem: "malformed registration: \(Self.describe(error))")
        }
        guard isValidName(registration.name), registration.pid > 0, registration.socket.hasPrefix("/") else {
            throw RuntimeDirectoryError(path: file, problem: "malformed registration: bad name, pid or socket")
        }
        return registration
    }

    private static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        switch error {
        case .keyNotFound(let key, _): return "missing field \(key.stringValue)"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            return field.isEmpty ? "not a JSON object" : "field \(field): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// The process behind a registration, read from /proc.
public enum InstanceProcess {
    /// Field 22 of /proc/<pid>/stat (start time in clock ticks), or nil when there is no such process.
    public static func startTime(pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces) start at field 3 (state).
        let fields = text[text.index(after: close)...].split(separator: " ")
        let index = 22 - 3
        guard fields.count > index else { return nil }
        return UInt64(fields[index])
    }

    /// Resident memory of the process (VmRSS), bytes.
    public static func residentBytes(pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard words.count >= 2, let kib = Int(words[1]) else { return nil }
            return kib << 10
        }
        return nil
    }

    /// Whether `pid` is the process that wrote the registration (alive and started at the same time).
    public static func isAlive(pid: Int32, startedAt start: UInt64) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        return startTime(pid: pid) == start
    }
}
