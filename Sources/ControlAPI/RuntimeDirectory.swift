import Foundation
import Glibc

/// The host's runtime directory (default /run/streamvm): one `<name>.json` registration and one
/// `<name>.sock` control socket per running appliance. Entries are written by the VMM that owns
/// them and removed when it exits; a VMM that died leaves a stale entry, which readers detect (the
/// pid is gone or was reused, or the socket refuses connections) and `prune` removes.
///
/// A registration is written to a temporary file, fsynced, then linked to its final name: `link`
/// is as atomic as `rename` but fails when the name exists, so a second instance can never replace
/// a live one's entry; the directory is fsynced so the entry survives a crash as a stale one.
public struct RuntimeDirectory: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    public func registrationPath(_ name: String) -> String { "\(path)/\(name).json" }
    public func socketPath(_ name: String) -> String { "\(path)/\(name).sock" }

    /// One entry as a reader sees it.
    public struct Entry: Sendable {
        public var file: String
        public var registration: InstanceRegistration?
        /// nil when live; otherwise why the entry is stale or unreadable.
        public var problem: String?

        public var isLive: Bool { registration != nil && problem == nil }
    }

    /// Creates the directory (0755) when missing; refuses one anybody could write into, where a
    /// registration could point `ps`/`stop` at a socket of someone else's choosing.
    public func prepare() throws {
        if mkdir(path, 0o755) != 0, errno != EEXIST {
            throw RuntimeDirectoryError(path: path, problem: "cannot create: \(String(cString: strerror(errno)))")
        }
        try checkSafe()
    }

    func checkSafe() throws {
        var status = stat()
        guard stat(path, &status) == 0 else { throw RuntimeDirectoryError(path: path, problem: String(cString: strerror(errno))) }
        guard (status.st_mode & S_IFMT) == S_IFDIR else { throw RuntimeDirectoryError(path: path, problem: "not a directory") }
        guard status.st_mode & S_IWOTH == 0 else {
            throw RuntimeDirectoryError(path: path, problem: "world-writable; chmod o-w it (anyone could register a fake appliance)")
        }
    }

    /// Every `*.json` entry, each checked for liveness; a directory that does not exist has none.
    public func entries() throws -> [Entry] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        try checkSafe()
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
            throw RuntimeDirectoryError(path: path, problem: "cannot list: \((error as NSError).localizedDescription)")
        }
        return names.sorted().filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.map { entry(file: "\(path)/\($0)") }
    }

    /// The entry registered under `name`, or nil when there is none.
    public func entry(named name: String) -> Entry? {
        let file = registrationPath(name)
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        return entry(file: file)
    }

    private func entry(file: String) -> Entry {
        let registration: InstanceRegistration
        do {
            guard let data = FileManager.default.contents(atPath: file) else { throw RuntimeDirectoryError(path: file, problem: "cannot read") }
            registration = try InstanceRegistration.decode(data, file: file)
        } catch {
            return Entry(file: file, registration: nil, problem: "\(error)")
        }
        if !InstanceProcess.isAlive(pid: registration.pid, startedAt: registration.processStart) {
            return Entry(file: file, registration: registration, problem: "process \(registration.pid) is gone")
        }
        if !ControlAPIClient(socketPath: registration.socket).accepts() {
            return Entry(file: file, registration: registration, problem: "socket \(registration.socket) refuses connections")
        }
        return Entry(file: file, registration: registration, problem: nil)
    }

    /// Removes a stale entry: its registration and, when it is in this directory and nobody
    /// accepts on it, its socket. A live entry is never touched.
    public func prune(_ entry: Entry) {
        guard !entry.isLive else { return }
        if let socket = entry.registration?.socket, socket.hasPrefix(path + "/"), !ControlAPIClient(socketPath: socket).accepts() {
            unlink(socket)
        }
        unlink(entry.file)
    }

    /// A free name: `preferred` itself when given explicitly (an error if a live instance holds it),
    /// otherwise `base`, `base-2`, `base-3`, … Stale entries in the way are pruned.
    public func chooseName(preferred: String?, base: String) throws -> String {
        if let preferred {
            guard InstanceRegistration.isValidName(preferred) else {
                throw RuntimeDirectoryError(path: path, problem: "'\(preferred.prefix(60))' is not a valid name (letters, digits, . _ -, up to \(InstanceRegistration.maximumNameLength))")
            }
            if let existing = entry(named: preferred) {
                guard !existing.isLive else {
                    throw RuntimeDirectoryError(path: existing.file, problem: "name \(preferred) is taken by running process \(existing.registration?.pid ?? 0); choose another --name")
                }
                prune(existing)
            }
            return preferred
        }
        var cleaned = String(base.map { InstanceRegistration.isValidName(String($0)) || $0 == "." ? $0 : "-" }.prefix(InstanceRegistration.maximumNameLength - 4))
        while cleaned.hasPrefix(".") { cleaned.removeFirst() }
        if cleaned.isEmpty { cleaned = "vm" }
        for index in 1...999 {
            let candidate = index == 1 ? cleaned : "\(cleaned)-\(index)"
            guard let existing = entry(named: candidate) else { return candidate }
            if !existing.isLive { prune(existing); return candidate }
        }
        throw RuntimeDirectoryError(path: path, problem: "no free name for \(cleaned)")
    }

    /// Writes `registration` under its name (never replacing an entry) and returns a handle that
    /// removes it again.
    public func register(_ registration: InstanceRegistration) throws -> Registered {
        let final = registrationPath(registration.name)
        let temporary = "\(path)/.\(registration.name).\(getpid()).tmp"
        let data = try registration.encoded()
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw RuntimeDirectoryError(path: temporary, problem: String(cString: strerror(errno))) }
        defer { unlink(temporary) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == data.count, synced == 0 else { throw RuntimeDirectoryError(path: temporary, problem: "cannot write: \(String(cString: strerror(errno)))") }
        guard link(temporary, final) == 0 else {
            if errno == EEXIST { throw RuntimeDirectoryError(path: final, problem: "another instance registered this name meanwhile; choose another --name") }
            throw RuntimeDirectoryError(path: final, problem: String(cString: strerror(errno)))
        }
        let directory = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 { fsync(directory); close(directory) }
        return Registered(file: final, pid: registration.pid)
    }

    /// A registration this process wrote; `remove()` deletes it if it is still this process's.
    public final class Registered: Sendable {
        public let file: String
        let pid: Int32

        init(file: String, pid: Int32) {
            self.file = file
            self.pid = pid
        }

        public func remove() {
            guard let data = FileManager.default.contents(atPath: file),
                  let current = try? InstanceRegistration.decode(data, file: file), current.pid == pid else { return }
            unlink(file)
        }
    }
}

/// A runtime directory or registration that cannot be used; names the path.
public struct RuntimeDirectoryError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var problem: String
    public var description: String { "\(path): \(problem)" }
}
