import Foundation

/// The host's one optional configuration file, JSON (Foundation reads it; no format of our own to
/// parse): the defaults an operator sets once for every command, which flags still override.
///
/// ```json
/// { "cacheDirectory": "/var/cache/streamvm", "cacheSize": "50G",
///   "origins": ["https://edge1.example/catalog"], "uploadTokenFile": "/etc/streamvm/upload.token",
///   "traceTokenFile": "/etc/streamvm/trace.token", "runtimeDirectory": "/run/streamvm",
///   "trustDirectory": "/etc/streamvm/trusted.d" }
/// ```
///
/// Every field is optional; an unknown field is an error (a typo must not silently fall back to a
/// default). Tokens are named by file, never written into the config. The file decides which keys
/// are trusted, so a world-writable one is refused like a world-writable trust directory.
struct HostConfigFile: Equatable {
    static let defaultPath = "/etc/streamvm/config.json"
    static let environmentVariable = "STREAMVM_CONFIG"
    /// A configuration is a few lines; refuse anything far larger before parsing it.
    static let maximumBytes = 64 << 10

    /// Where the file was read from, or nil when there is none (the default path is absent).
    var path: String?
    var cacheDirectory: String?
    var cacheSize: String?
    var origins: [String]?
    var uploadTokenFile: String?
    var traceTokenFile: String?
    var runtimeDirectory: String?
    var trustDirectory: String?

    static let fields = ["cacheDirectory", "cacheSize", "origins", "uploadTokenFile", "traceTokenFile", "runtimeDirectory", "trustDirectory"]

    /// No file: every setting comes from its flag or default.
    static let none = HostConfigFile()

    /// Reads `path`; `required` is false only for the default path, whose absence is normal.
    static func load(path: String, required: Bool) throws -> HostConfigFile {
        var status = stat()
        guard stat(path, &status) == 0 else {
            if errno == ENOENT, !required { return .none }
            throw HostConfigError(path: path, field: nil, problem: String(cString: strerror(errno)))
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw HostConfigError(path: path, field: nil, problem: "not a regular file") }
        guard status.st_mode & S_IWOTH == 0 else {
            throw HostConfigError(path: path, field: nil, problem: "world-writable (anyone could change which keys are trusted); chmod o-w it")
        }
        guard status.st_size <= maximumBytes else {
            throw HostConfigError(path: path, field: nil, problem: "\(status.st_size) bytes exceeds the limit of \(maximumBytes)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HostConfigError(path: path, field: nil, problem: "cannot read the file")
        }
        return try parse(data, path: path)
    }

    static func parse(_ data: Data, path: String) throws -> HostConfigFile {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw HostConfigError(path: path, field: nil, problem: "not JSON (\((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "syntax error"))")
        }
        guard let fieldsFound = object as? [String: Any] else { throw HostConfigError(path: path, field: nil, problem: "not a JSON object") }
        if let unknown = fieldsFound.keys.sorted().first(where: { !fields.contains($0) }) {
            throw HostConfigError(path: path, field: unknown, problem: "unknown field (known: \(fields.joined(separator: ", ")))")
        }
        func string(_ name: String) throws -> String? {
            guard let value = fieldsFound[name] else { return nil }
            guard let text = value as? String, !text.isEmpty, !text.contains("\0") else {
                throw HostConfigError(path: path, field: name, problem: "must be a non-empty string")
            }
            return text
        }
        var config = HostConfigFile(path: path)
        config.cacheDirectory = try string("cacheDirectory")
        config.cacheSize = try string("cacheSize")
        if let size = config.cacheSize, ByteSize.parse(size) == nil {
            throw HostConfigError(path: path, field: "cacheSize", problem: "'\(size.prefix(40))' is not a size like 20G")
        }
        if let value = fieldsFound["origins"] {
            guard let list = value as? [String], list.allSatisfy({ !$0.isEmpty }) else {
                throw HostConfigError(path: path, field: "origins", problem: "must be a list of URL strings")
            }
            config.origins = list
        }
        config.uploadTokenFile = try string("uploadTokenFile")
        config.traceTokenFile = try string("traceTokenFile")
        config.runtimeDirectory = try string("runtimeDirectory")
        config.trustDirectory = try string("trustDirectory")
        return config
    }
}

/// A configuration file the CLI cannot use, naming the file and, when one is at fault, the field.
struct HostConfigError: Error, CustomStringConvertible {
    var path: String
    var field: String?
    var problem: String

    var description: String {
        if let field { return "\(path): field '\(field)': \(problem)" }
        return "\(path): \(problem)"
    }
}
