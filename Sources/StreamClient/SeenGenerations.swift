import Catalog
import Foundation

/// The highest catalogue generation this host has accepted, per catalogue signing key: the memory
/// that lets `boot` and `fetch` refuse an older (validly signed) catalogue from a stale mirror, as
/// `mirror` refuses to go back from what its destination holds.
///
/// One small JSON file. Every update reads, raises and writes it while holding an exclusive `flock`
/// on its directory, and writes through a temp file, fsync and rename, so concurrent processes
/// never lose each other's update and a crash leaves the old file or the new one.
public final class SeenGenerations: Sendable {
    public static let fileName = "catalog-generations.json"
    /// A key is 44 characters of base64 and a generation a number: 1 MiB is tens of thousands of
    /// keys, far beyond any host; a bigger file is not ours.
    static let maximumBytes = 1 << 20
    static let formatTag = "streamvm-seen-generations-v1"

    public let directory: String
    public var path: String { "\(directory)/\(Self.fileName)" }

    private struct File: Codable {
        var format: String
        /// Base64 Ed25519 public key → highest generation accepted.
        var generations: [String: Int]
    }

    /// `directory` is created when the first generation is recorded.
    public init(directory: String) {
        self.directory = (directory as NSString).standardizingPath
    }

    /// The highest generation recorded for `key`, nil when the key was never seen on this host.
    public func highest(for key: TrustedKey) throws -> Int? {
        try load()[key.base64]
    }

    /// Every record, by base64 public key (read once before a fetch, when the signer is not yet known).
    public func all() throws -> [String: Int] {
        try load()
    }

    /// Raises `key`'s record to `generation` (a lower one changes nothing) and returns the record
    /// as it now is.
    @discardableResult
    public func record(_ generation: Int, for key: TrustedKey) throws -> Int {
        try AtomicFile.makeDirectories(directory)
        return try withDirectoryLock {
            var generations = try load()
            let current = generations[key.base64] ?? -1
            guard generation > current else { return current }
            generations[key.base64] = generation
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            do {
                try AtomicFile.write(try encoder.encode(File(format: Self.formatTag, generations: generations)), to: path, mode: 0o600)
            } catch let error as CatalogError {
                throw ClientError.generationRecord(path: path, problem: error.description)
            }
            return generation
        }
    }

    /// Every key's record; an absent file is an empty record. A file that is not ours is an error
    /// naming it (silently starting over would drop the protection).
    private func load() throws -> [String: Int] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            if FileManager.default.fileExists(atPath: path) {
                throw ClientError.generationRecord(path: path, problem: "cannot be read")
            }
            return [:]
        }
        defer { try? handle.close() }
        let data: Data
        do { data = try handle.read(upToCount: Self.maximumBytes + 1) ?? Data() } catch {
            throw ClientError.generationRecord(path: path, problem: "cannot be read: \(error)")
        }
        guard data.count <= Self.maximumBytes else {
            throw ClientError.generationRecord(path: path, problem: "larger than \(Self.maximumBytes) bytes")
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw ClientError.generationRecord(path: path, problem: "not valid JSON of this format")
        }
        guard file.format == Self.formatTag else {
            throw ClientError.generationRecord(path: path, problem: "format '\(file.format.prefix(60))' is not \(Self.formatTag)")
        }
        for (key, generation) in file.generations {
            guard generation >= 0, (try? TrustedKey(raw: Data(base64Encoded: key) ?? Data(), source: path)) != nil else {
                throw ClientError.generationRecord(path: path, problem: "entry '\(key.prefix(60))': \(generation) is not a key and a generation")
            }
        }
        return file.generations
    }

    /// Holds an exclusive flock on the directory itself (no lock file beside the record); the lock
    /// goes with the descriptor, also when the process dies.
    private func withDirectoryLock<T>(_ body: () throws -> T) throws -> T {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ClientError.io(path: directory, errno: errno) }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else { throw ClientError.io(path: directory, errno: errno) }
        }
        return try body()
    }
}

/// How a `CatalogClient` guards against rollback beyond what one run already knows: it refuses a
/// catalogue older than the highest generation this host has accepted for the same signing key,
/// and records every generation it accepts. An unsigned catalogue (only with --insecure) has no key
/// to bind a generation to and is not guarded.
public struct RollbackProtection: Sendable {
    public let seen: SeenGenerations
    /// The operator's override (`--allow-rollback`): an older generation is accepted (and logged),
    /// and the record keeps the highest generation seen.
    public let allowRollback: Bool

    public init(seen: SeenGenerations, allowRollback: Bool = false) {
        self.seen = seen
        self.allowRollback = allowRollback
    }
}
