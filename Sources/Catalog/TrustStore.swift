import Foundation

/// A host's trusted catalogue keys: every `*.pub` file (from `streamvm keygen`) in one directory,
/// like apt's trusted.gpg.d. Used when a command gets no `--trust` file.
///
/// The directory decides what this host runs, so it is refused when someone other than its owner
/// could change it (world-writable directory or key file) or when it cannot be read; one bad key
/// file fails the whole store with its path, rather than silently trusting fewer keys than the
/// operator put there. Other files (README, *.dpkg-old) are ignored.
public struct TrustStore: Sendable {
    /// Where a host keeps its trusted keys unless configured otherwise.
    public static let defaultDirectory = "/etc/streamvm/trusted.d"
    /// The extension `streamvm keygen` gives public keys.
    public static let keyFileExtension = ".pub"
    /// A key file is one short line; anything much larger is not one.
    static let maximumKeyFileBytes = 4096

    public let directory: String
    /// The keys in file-name order, with the file each came from.
    public let keys: [(file: String, key: TrustedKey)]

    /// Loads the store; a directory that does not exist is an empty store (no keys trusted).
    public init(directory: String) throws {
        self.directory = directory
        var status = stat()
        guard stat(directory, &status) == 0 else {
            if errno == ENOENT { keys = []; return }
            throw CatalogError.untrustworthyTrustDirectory(path: directory, problem: String(cString: strerror(errno)))
        }
        guard (status.st_mode & S_IFMT) == S_IFDIR else {
            throw CatalogError.untrustworthyTrustDirectory(path: directory, problem: "not a directory")
        }
        guard status.st_mode & S_IWOTH == 0 else {
            throw CatalogError.untrustworthyTrustDirectory(path: directory, problem: "world-writable (anyone could add a key); chmod o-w it")
        }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw CatalogError.untrustworthyTrustDirectory(path: directory, problem: "cannot list it (\((error as NSError).localizedDescription))")
        }
        var loaded: [(file: String, key: TrustedKey)] = []
        for name in names.sorted() where name.hasSuffix(Self.keyFileExtension) && !name.hasPrefix(".") {
            let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            loaded.append((path, try Self.loadKey(path)))
        }
        keys = loaded
    }

    /// The trust policy of this store: any one of its keys.
    public var trust: SignedCatalog.Trust { .anyOf(keys.map(\.key)) }

    private static func loadKey(_ path: String) throws -> TrustedKey {
        var status = stat()
        guard stat(path, &status) == 0 else { throw CatalogError.invalidKeyFile(path: path, problem: String(cString: strerror(errno))) }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw CatalogError.invalidKeyFile(path: path, problem: "not a regular file") }
        guard status.st_mode & S_IWOTH == 0 else {
            throw CatalogError.invalidKeyFile(path: path, problem: "world-writable (anyone could replace the key); chmod o-w it")
        }
        guard status.st_size <= maximumKeyFileBytes else {
            throw CatalogError.invalidKeyFile(path: path, problem: "\(status.st_size) bytes, a key file is one line")
        }
        return try TrustedKey(file: path)
    }
}
