import CKVM
import Foundation
import Glibc

/// Gives back the memory a VMM process touched only while it started: pages of its executable and
/// libraries (argument parsing, JSON decoding, KVM setup, boot loading, the control API's set-up)
/// and heap freed since. A host that runs many appliances pays each VMM's resident memory once per
/// appliance, and these pages would otherwise stay resident for the whole run.
///
/// Why this is safe:
/// - Only private, read-only mappings of files that exist on disk and hold no anonymous (copied)
///   page are touched (`ProcessMemoryMap.Mapping.isCleanFileMapping`). MADV_DONTNEED on
///   such a mapping only unmaps its pages from this process: they stay in the page cache, and the
///   next touch maps them again from the file, unchanged (madvise(2)). It is what the kernel's
///   reclaim does to the same pages under memory pressure. Writable private mappings (.data,
///   .bss, RELRO before it is sealed) are never touched: dropping a written page would lose it.
/// - Guest RAM is never touched: it is a shared memfd mapping or an anonymous one, neither of which
///   is a file-backed private mapping.
/// - `malloc_trim(0)` returns free heap pages to the kernel; only memory malloc has already freed.
/// Code that runs later (the vCPU loop, device emulation, the control API) faults its pages back
/// in on first use: a few page faults served from the page cache.
public enum StartupPageRelease {
    public struct Summary: Sendable, Codable, Equatable {
        /// Mappings advised with MADV_DONTNEED.
        public var mappingsReleased: Int
        /// Their resident bytes just before.
        public var fileBytesReleased: Int
        /// Mappings madvise refused (locked memory, for instance); left as they were.
        public var mappingsRefused: Int
        /// Whether malloc_trim gave memory back.
        public var heapTrimmed: Bool
        /// The process's resident bytes before (sum over smaps) and after (statm).
        public var residentBefore: Int
        public var residentAfter: Int
    }

    /// Releases this process's startup pages (see the type's comment). Throws only when
    /// /proc/self/smaps cannot be read; then nothing was released.
    @discardableResult
    /// `includingLibraries: false` releases the executable's pages only: no other thread can unmap
    /// and reuse those addresses, so it is safe in a process that may `dlopen` concurrently (the
    /// shared test process, where name lookups load NSS modules).
    public static func release(includingLibraries: Bool = true) throws -> Summary {
        let before = try ProcessMemoryMap.read()
        var released = 0, bytes = 0, refused = 0
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        for mapping in before.mappings where mapping.isCleanFileMapping && mapping.resident > 0 && isCode(mapping.path, executable: executable, includingLibraries: includingLibraries) {
            guard let address = UnsafeMutableRawPointer(bitPattern: mapping.start) else { continue }
            if madvise(address, mapping.length, MADV_DONTNEED) == 0 {
                released += 1
                bytes += mapping.resident
            } else {
                refused += 1
            }
        }
        let trimmed = ckvm_malloc_trim(0) == 1
        // From statm, not smaps: parsing smaps again would fault back in the code that parses it.
        let after = residentFromStatm() ?? before.resident
        return Summary(mappingsReleased: released, fileBytesReleased: bytes, mappingsRefused: refused, heapTrimmed: trimmed,
                       residentBefore: before.resident, residentAfter: after)
    }

    /// Only the executable and shared libraries: they stay mapped for the life of the process (the
    /// VMM unloads no library), whereas a data file some thread maps could be unmapped between the
    /// smaps read and the madvise, and its address reused by anonymous memory that madvise would
    /// then wipe. (One full test-suite run crashed with SIGSEGV while the release ran in the shared
    /// test process, before this restriction; the cause was not identified.)
    static func isCode(_ path: String, executable: String, includingLibraries: Bool = true) -> Bool {
        path == executable || (includingLibraries && (path.hasSuffix(".so") || path.contains(".so.")))
    }

    /// Resident bytes of this process: the second field of /proc/self/statm, in pages.
    static func residentFromStatm() -> Int? {
        guard let text = try? ProcessMemoryMap.readWhole("/proc/self/statm") else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
