import Foundation
import Glibc

/// The mappings of a process as /proc/PID/smaps lists them (proc(5)), with the page counts the
/// footprint figures and the startup-page release need. Sizes are bytes.
public struct ProcessMemoryMap: Sendable {
    public struct Mapping: Sendable, Equatable {
        public var start: UInt
        public var end: UInt
        /// "r-xp" and the like: read, write, execute, then `p` private or `s` shared.
        public var permissions: String
        /// The file or pseudo-name ("[heap]", "[stack]", "/memfd:name (deleted)"); empty for anonymous memory.
        public var path: String
        /// Resident bytes of this mapping (its own pages, whether shared with other processes or not).
        public var resident: Int = 0
        /// Private pages that are copies (copy-on-write or never file-backed): dropping them loses data.
        public var anonymous: Int = 0
        public var privateDirty: Int = 0
        public var sharedDirty: Int = 0

        public var length: Int { Int(end - start) }
        public var isPrivate: Bool { permissions.hasSuffix("p") }
        public var isWritable: Bool { permissions.dropFirst().first == "w" }
        /// Backed by a file that still exists on disk (not a memfd, not a deleted file, not a pseudo-mapping).
        public var isFileBacked: Bool { path.hasPrefix("/") && !path.hasPrefix("/memfd:") && !path.hasSuffix("(deleted)") }

        /// Whether every resident page of this mapping can be dropped and will come back unchanged
        /// from its file on the next touch: a private, read-only mapping of a file on disk holding
        /// no copied (anonymous) page, so every page it maps is a page-cache page of the file.
        /// (smaps also counts a page-cache page as dirty while the file's own writes to it are not
        /// yet on disk — a freshly linked binary — which does not matter: the page cache keeps it.)
        /// Writable private mappings are never candidates: a page written after this check would be lost.
        public var isCleanFileMapping: Bool {
            isFileBacked && isPrivate && !isWritable && anonymous == 0
        }
    }

    public var mappings: [Mapping]

    /// Sum of every mapping's resident bytes (VmRSS, up to page tables).
    public var resident: Int { mappings.reduce(0) { $0 + $1.resident } }

    public init(mappings: [Mapping]) {
        self.mappings = mappings
    }

    /// Reads /proc/<pid>/smaps (`self` for this process).
    public static func read(process: String = "self") throws -> ProcessMemoryMap {
        let path = "/proc/\(process)/smaps"
        return try parse(try readWhole(path), source: path)
    }

    /// Reads a /proc file to its end. Its size is reported as 0 and the kernel hands it out a page
    /// or so per read(2), so a reader that trusts the size or stops after one read gets a prefix.
    static func readWhole(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.ioFailed("cannot open \(path): \(String(cString: strerror(errno))) (no such process, or /proc is not mounted)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw HypervisorError.ioFailed("cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Parses smaps text: a header line per mapping ("start-end perms offset dev inode [path]") followed
    /// by "Key: value kB" lines. Keys this type does not use are skipped.
    public static func parse(_ text: String, source: String = "smaps") throws -> ProcessMemoryMap {
        var mappings: [Mapping] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), !first.hasSuffix(":") {
                let bounds = first.split(separator: "-")
                guard fields.count >= 5, bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16), end >= start else {
                    throw HypervisorError.ioFailed("\(source): cannot parse mapping line '\(line)'")
                }
                let path = fields.count == 6 ? String(fields[5]).trimmingCharacters(in: .whitespaces) : ""
                mappings.append(Mapping(start: start, end: end, permissions: String(fields[1]), path: path))
                continue
            }
            guard fields.count >= 2, !mappings.isEmpty, let key = fields.first, key.hasSuffix(":"), let kibibytes = Int(fields[1]) else { continue }
            let bytes = kibibytes * 1024
            switch key {
            case "Rss:": mappings[mappings.count - 1].resident = bytes
            case "Anonymous:": mappings[mappings.count - 1].anonymous = bytes
            case "Private_Dirty:": mappings[mappings.count - 1].privateDirty = bytes
            case "Shared_Dirty:": mappings[mappings.count - 1].sharedDirty = bytes
            default: continue
            }
        }
        return ProcessMemoryMap(mappings: mappings)
    }
}
