import Foundation
import Glibc

/// Writes guest RAM to memory.img (or only describes it, for a migration): every page that is not all zeros at its offset, zero pages as
/// holes (a sparse file; `publish` never stores all-zero chunks), and the per-page digests that let
/// a lazy restore check each page before mapping it. Ranges the memfd never allocated are skipped
/// without being read (Self.seekData), so a large, mostly idle guest is saved quickly; anonymous
/// memory is read page by page.
enum MemoryImageWriter {
    /// lseek(2) whence values from linux/fs.h; glibc hides them behind _GNU_SOURCE.
    static let seekData: Int32 = 3
    static let seekHole: Int32 = 4

    /// Writes `memory` to `path` (via a temporary file, fsync, rename) and describes the result.
    static func write(_ memory: GuestMemory, to path: String) throws -> MachineSnapshot.MemoryImage {
        var image: MachineSnapshot.MemoryImage?
        try AtomicFile.write(to: path) { fd, temporary in
            guard ftruncate(fd, off_t(memory.size)) == 0 else { throw HypervisorError.ioFailed("cannot size \(temporary): \(String(cString: strerror(errno)))") }
            image = try scan(memory) { page, bytes in
                try PositionalIO.write(fd, from: bytes, at: UInt64(page * GuestMemory.pageSize), path: temporary)
            }
        }
        return image!
    }

    /// Describes `memory` (every page's digest) without writing it anywhere.
    static func describe(_ memory: GuestMemory) throws -> MachineSnapshot.MemoryImage {
        try scan(memory) { _, _ in }
    }

    /// Digests every page of `memory` and hands each page that is not all zeros to `visit`.
    private static func scan(_ memory: GuestMemory, visit: (Int, UnsafeRawBufferPointer) throws -> Void) throws -> MachineSnapshot.MemoryImage {
        let pageSize = GuestMemory.pageSize
        let pageCount = memory.size / pageSize
        var digests = [UInt64](repeating: 0, count: pageCount)
        var dataPages = 0
        let base = memory.regions[0].host - memory.regions[0].fileOffset
        func save(page: Int) throws {
            let bytes = UnsafeRawBufferPointer(start: base + page * pageSize, count: pageSize)
            let digest = PageDigest.digest(bytes)
            guard digest != 0 else { return }
            digests[page] = digest
            dataPages += 1
            try visit(page, bytes)
        }
        if let memfd = memory.fileDescriptor {
            var offset = 0
            while offset < memory.size {
                // Next allocated range of the memfd; ENXIO means only holes remain.
                let dataStart = lseek(memfd, off_t(offset), Self.seekData)
                if dataStart < 0 { break }
                let holeStart = min(Int(lseek(memfd, dataStart, Self.seekHole)), memory.size)
                var page = Int(dataStart) / pageSize
                while page * pageSize < holeStart {
                    try save(page: page)
                    page += 1
                }
                offset = max(holeStart, page * pageSize)
            }
        } else {
            // Anonymous memory has no SEEK_DATA: read every page (an untouched one reads the shared
            // zero page, allocating nothing).
            for page in 0..<pageCount { try save(page: page) }
        }
        var littleEndian = Data(capacity: pageCount * 8)
        for digest in digests { withUnsafeBytes(of: digest.littleEndian) { littleEndian.append(contentsOf: $0) } }
        return MachineSnapshot.MemoryImage(size: memory.size, pageSize: pageSize, dataPages: dataPages, pageDigests: littleEndian)
    }
}
