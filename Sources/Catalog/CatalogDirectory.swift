import Foundation

/// A catalogue on local disk: the publisher writes it, the server and mirrors read it. Objects are
/// written atomically, and content-addressed objects are never overwritten once present.
public final class CatalogDirectory: @unchecked Sendable {
    public let root: String
    private let lock = NSLock()
    private var dictionariesByID: [UInt32: ZstdDictionary] = [:]

    public init(root: String, create: Bool = false) throws {
        self.root = (root as NSString).standardizingPath
        var isDirectory: ObjCBool = false
        if create {
            try AtomicFile.makeDirectories(self.root)
        } else if !FileManager.default.fileExists(atPath: self.root, isDirectory: &isDirectory) || !isDirectory.boolValue {
            throw CatalogError.io(path: self.root, errno: ENOENT)
        }
    }

    public func filePath(_ object: CatalogObject) -> String { "\(root)/\(object.path)" }

    public func contains(_ object: CatalogObject) -> Bool {
        access(filePath(object), F_OK) == 0
    }

    public func read(_ object: CatalogObject) throws -> Data {
        let path = filePath(object)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CatalogError.io(path: path, errno: access(path, R_OK) == 0 ? EIO : ENOENT)
        }
        return data
    }

    /// Stores an object atomically. Content-addressed objects already present are left untouched;
    /// the mutable ones (catalog.json, models.json) are replaced. Returns whether bytes were written.
    @discardableResult
    public func write(_ object: CatalogObject, data: some ContiguousBytes, durable: Bool = true) throws -> Bool {
        if object.digest != nil && contains(object) { return false }
        try AtomicFile.write(data, to: filePath(object), durable: durable)
        return true
    }

    /// Replaces a content-addressed object that failed verification (the only time one is overwritten).
    public func repair(_ object: CatalogObject, data: some ContiguousBytes) throws {
        try AtomicFile.write(data, to: filePath(object))
    }

    /// Runs `body` holding an exclusive lock on the catalogue directory (flock on the directory
    /// itself, so no lock file appears among the served objects). Every writer of catalog.json
    /// (publish, learn, uploads to a server) reads, changes and writes it inside this lock, so two
    /// processes updating the same catalogue cannot lose each other's change. The lock goes with the
    /// descriptor, also when the process dies.
    public func withCatalogLock<T>(_ body: () throws -> T) throws -> T {
        let descriptor = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw CatalogError.io(path: root, errno: errno) }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else { throw CatalogError.io(path: root, errno: errno) }
        }
        return try body()
    }

    /// Reads and verifies catalog.json; an absent file is an empty catalogue.
    public func loadCatalog(trust: SignedCatalog.Trust) throws -> SignedCatalog? {
        guard contains(.catalog) else { return nil }
        return try SignedCatalog.decode(try read(.catalog), trust: trust, file: filePath(.catalog))
    }

    public func loadManifest(_ digest: Digest) throws -> Manifest {
        let object = CatalogObject.manifest(digest)
        return try Manifest.decode(try read(object), expected: digest, file: filePath(object))
    }

    public func loadDictionary(_ digest: Digest) throws -> ZstdDictionary {
        let object = CatalogObject.dictionary(digest)
        let data = try read(object)
        let dictionary = try ZstdDictionary(bytes: [UInt8](data))
        guard dictionary.digest == digest else {
            throw CatalogError.digestMismatch(object: filePath(object), actual: dictionary.digest.hex)
        }
        return dictionary
    }

    /// Every stored object of one kind, found by listing the directory (names that are not exact
    /// object names, such as temp files, are skipped).
    public func objects(of kind: CatalogObject.Kind) -> [CatalogObject] {
        let base = "\(root)/\(kind.rawValue)"
        guard let shards = try? FileManager.default.contentsOfDirectory(atPath: base) else { return [] }
        var result = [CatalogObject]()
        for shard in shards.sorted() {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: "\(base)/\(shard)") else { continue }
            for name in names.sorted() {
                if let object = try? CatalogObject(path: "\(kind.rawValue)/\(shard)/\(name)") { result.append(object) }
            }
        }
        return result
    }

    /// Finds the dictionary a chunk frame names by its 32-bit ID, scanning `dicts/` once per new ID.
    public func dictionary(id: UInt32) throws -> ZstdDictionary? {
        lock.lock()
        if let known = dictionariesByID[id] { lock.unlock(); return known }
        lock.unlock()
        for case .dictionary(let digest) in objects(of: .dictionary) {
            guard let dictionary = try? loadDictionary(digest) else { continue }
            lock.lock()
            dictionariesByID[dictionary.dictionaryID] = dictionary
            lock.unlock()
        }
        lock.lock()
        defer { lock.unlock() }
        return dictionariesByID[id]
    }

    /// A verifier that resolves dictionaries from this catalogue.
    public func makeVerifier() throws -> ObjectVerifier {
        try ObjectVerifier(resolveDictionary: { [unowned self] id in try self.dictionary(id: id) })
    }
}
