import Foundation
import Glibc
import Hypervisor

/// Where a VMM process's resident memory goes, from /proc/PID/smaps, mapping by mapping. Guest RAM
/// (the `streamvm-guest-ram` memfd) is reported on its own and is not part of the VMM's own
/// figure: it is the guest's memory, paid whatever VMM runs it.
public struct VMMFootprint: Codable, Sendable {
    /// Sum of every mapping's resident pages (VmRSS up to page tables), guest RAM included.
    public var totalMiB: Double
    /// Guest pages resident in the VMM's mapping of guest RAM (pages the guest or the loader touched).
    public var guestMemoryMiB: Double
    /// `totalMiB - guestMemoryMiB`: what the VMM itself costs.
    public var vmmOwnMiB: Double
    /// The VMM's own part by kind of mapping.
    public var executableMiB: Double
    public var librariesMiB: Double
    public var heapMiB: Double
    /// Anonymous mappings: thread stacks, malloc arenas of other threads, runtime metadata.
    public var anonymousMiB: Double
    /// vDSO, vvar, other pseudo-mappings and memfds other than guest RAM.
    public var otherMiB: Double
    /// The VMM's own resident pages that are clean pages of files (could be dropped and re-read).
    public var cleanFileMiB: Double
    /// The largest resident mappings of the VMM's own, for the report.
    public var largest: [Entry]

    public struct Entry: Codable, Sendable {
        public var path: String
        public var permissions: String
        public var residentKiB: Int
    }

    /// Name of the memfd behind guest RAM (GuestMemory), as smaps shows it.
    static let guestMemoryName = "/memfd:streamvm-guest-ram"

    public init(_ map: ProcessMemoryMap, executable: String) {
        let mebibyte = Double(1 << 20)
        var guest = 0, binary = 0, libraries = 0, heap = 0, anonymous = 0, other = 0, clean = 0
        var own: [ProcessMemoryMap.Mapping] = []
        for mapping in map.mappings {
            if mapping.path.hasPrefix(Self.guestMemoryName) {
                guest += mapping.resident
                continue
            }
            own.append(mapping)
            if mapping.isCleanFileMapping { clean += mapping.resident }
            switch mapping.path {
            case executable: binary += mapping.resident
            case "[heap]": heap += mapping.resident
            case "": anonymous += mapping.resident
            case let path where mapping.isFileBacked && path.hasPrefix("/"): libraries += mapping.resident
            default: other += mapping.resident
            }
        }
        totalMiB = Double(map.resident) / mebibyte
        guestMemoryMiB = Double(guest) / mebibyte
        vmmOwnMiB = Double(map.resident - guest) / mebibyte
        executableMiB = Double(binary) / mebibyte
        librariesMiB = Double(libraries) / mebibyte
        heapMiB = Double(heap) / mebibyte
        anonymousMiB = Double(anonymous) / mebibyte
        otherMiB = Double(other) / mebibyte
        cleanFileMiB = Double(clean) / mebibyte
        largest = own.sorted { $0.resident > $1.resident }.prefix(8).filter { $0.resident > 0 }.map {
            Entry(path: $0.path.isEmpty ? "[anonymous]" : $0.path, permissions: $0.permissions, residentKiB: $0.resident >> 10)
        }
    }
}
