import CKVM
import Glibc

/// How guest RAM is backed (docs/hypervisor.md, "Guest memory for other modules").
public enum MemoryBacking: String, Sendable, Codable {
    /// One memfd mapped MAP_SHARED (the default): a snapshot skips never-allocated ranges with
    /// SEEK_DATA, and the RAM is a file another process could map. KSM never merges it (shmem).
    case sharedMemfd
    /// Anonymous MAP_PRIVATE memory: the only kind KSM merges (MADV_MERGEABLE, or
    /// PR_SET_MEMORY_MERGE from Linux 6.4); a snapshot reads every page.
    case anonymousPrivate
}

/// Guest RAM: one memfd mapped shared (or anonymous private memory, `MemoryBacking`), mapped into
/// this process and into the guest. Pages can be filled lazily (userfaultfd), snapshotted, dropped
/// (`discard`) or offered to KSM without copying the whole of RAM.
///
/// Every access by guest-physical address is bounds-checked: a guest-supplied address that is not
/// wholly inside one RAM region throws, so a hostile guest cannot make the VMM touch host memory
/// outside its RAM.
public final class GuestMemory: @unchecked Sendable {
    /// One contiguous guest-physical range backed by part of the memfd.
    public struct Region: @unchecked Sendable {
        public let guestAddress: UInt64
        public let length: Int
        /// Offset of this region inside the memfd.
        public let fileOffset: Int
        public let host: UnsafeMutableRawPointer

        public var guestEnd: UInt64 { guestAddress + UInt64(length) }
    }

    /// The 32-bit PCI/MMIO hole: RAM above this address moves to 4 GiB, leaving room for device
    /// windows, the IOAPIC (0xfec00000) and the local APIC (0xfee00000) below 4 GiB, as on PCs.
    public static let mmioHoleStart: UInt64 = 0xc000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
    /// The host page size: the unit of lazy loading and of snapshot memory images.
    public static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    public let regions: [Region]
    public let size: Int
    public let backing: MemoryBacking
    /// The memfd holding all of RAM (nil for anonymous backing).
    public let fileDescriptor: Int32?
    private let mapping: UnsafeMutableRawPointer

    /// Pages of RAM; a page index is its offset in the backing (memfd) order divided by the page size.
    public var pageCount: Int { size / Self.pageSize }

    /// Allocates `size` bytes of zeroed guest RAM starting at guest-physical 0.
    public init(size: Int, backing: MemoryBacking = .sharedMemfd) throws {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard size > 0, size % pageSize == 0 else { throw HypervisorError.invalidConfiguration("memory size \(size) is not a positive multiple of \(pageSize)") }
        var fd: Int32?
        if backing == .sharedMemfd {
            let memfd = ckvm_memfd_create("streamvm-guest-ram", CKVM_MFD_CLOEXEC)
            guard memfd >= 0 else { throw HypervisorError.system(call: "memfd_create", errno: errno) }
            guard ftruncate(memfd, off_t(size)) == 0 else {
                let error = errno
                close(memfd)
                throw HypervisorError.system(call: "ftruncate", errno: error)
            }
            fd = memfd
        }
        // MAP_NORESERVE: untouched guest pages cost nothing, so a large guest starts instantly.
        let address = fd.map { mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, $0, 0) }
            ?? mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let address, address != MAP_FAILED else {
            let error = errno
            if let fd { close(fd) }
            throw HypervisorError.system(call: "mmap", errno: error)
        }
        self.backing = backing
        fileDescriptor = fd
        mapping = address
        self.size = size
        let low = min(UInt64(size), Self.mmioHoleStart)
        var regions = [Region(guestAddress: 0, length: Int(low), fileOffset: 0, host: address)]
        if UInt64(size) > low {
            regions.append(Region(guestAddress: Self.mmioHoleEnd, length: size - Int(low), fileOffset: Int(low),
                                  host: address + Int(low)))
        }
        self.regions = regions
    }

    deinit {
        munmap(mapping, size)
        if let fileDescriptor { close(fileDescriptor) }
    }

    /// Host address of page `index` (backing order).
    public func hostAddress(ofPage index: Int) -> UnsafeMutableRawPointer { mapping + index * Self.pageSize }

    /// Drops `pages` from RAM: the memory goes back to the host, and the next touch finds the page
    /// missing — with a page-fault handler registered, it faults to its page source; without one it
    /// reads zeros. memfd: fallocate(PUNCH_HOLE | KEEP_SIZE); anonymous: madvise(MADV_DONTNEED).
    /// Call it on pages whose contents the caller can give back (a registered source), or while the
    /// machine is paused: a guest writing a page while it is dropped loses the write.
    public func discard(pages: Range<Int>) throws {
        guard pages.lowerBound >= 0, pages.upperBound <= pageCount else {
            throw HypervisorError.invalidConfiguration("pages \(pages) are outside guest RAM's \(pageCount) pages")
        }
        guard !pages.isEmpty else { return }
        let offset = pages.lowerBound * Self.pageSize
        let length = pages.count * Self.pageSize
        if let fileDescriptor {
            guard ckvm_fallocate(fileDescriptor, CKVM_FALLOC_PUNCH_HOLE_KEEP_SIZE, offset, length) == 0 else {
                throw HypervisorError.system(call: "fallocate(PUNCH_HOLE) on guest RAM", errno: errno)
            }
        } else {
            guard madvise(mapping + offset, length, CKVM_MADV_DONTNEED) == 0 else {
                throw HypervisorError.system(call: "madvise(MADV_DONTNEED) on guest RAM", errno: errno)
            }
        }
    }

    /// Offers all of RAM to KSM (madvise MADV_MERGEABLE). Only anonymous private memory can be
    /// merged; KSM also has to be running (/sys/kernel/mm/ksm/run = 1).
    public func adviseMergeable() throws {
        guard backing == .anonymousPrivate else {
            throw HypervisorError.invalidConfiguration("KSM merges only anonymous private memory: use MemoryBacking.anonymousPrivate")
        }
        guard madvise(mapping, size, CKVM_MADV_MERGEABLE) == 0 else {
            throw HypervisorError.system(call: "madvise(MADV_MERGEABLE) on guest RAM", errno: errno)
        }
    }

    /// The host bytes for guest range [address, address+length), or nil when any part of it is not
    /// RAM. Overflow-safe for any 64-bit inputs.
    public func hostBuffer(at address: UInt64, length: Int) -> UnsafeMutableRawBufferPointer? {
        guard length >= 0 else { return nil }
        for region in regions where address >= region.guestAddress && address < region.guestEnd {
            let offset = address - region.guestAddress
            guard UInt64(length) <= UInt64(region.length) - offset else { return nil }
            return UnsafeMutableRawBufferPointer(start: region.host + Int(offset), count: length)
        }
        return length == 0 && regions.contains(where: { address == $0.guestEnd }) ? UnsafeMutableRawBufferPointer(start: nil, count: 0) : nil
    }

    /// Like `hostBuffer` but throws a descriptive error for out-of-RAM ranges.
    public func checkedBuffer(at address: UInt64, length: Int) throws -> UnsafeMutableRawBufferPointer {
        guard let buffer = hostBuffer(at: address, length: length) else {
            throw HypervisorError.guestAddressOutOfRange(address: address, length: length)
        }
        return buffer
    }

    /// Copies `bytes` into guest memory at `address`.
    public func write(_ bytes: some Collection<UInt8>, at address: UInt64) throws {
        let buffer = try checkedBuffer(at: address, length: bytes.count)
        buffer.copyBytes(from: bytes)
    }

    /// Copies `length` bytes out of guest memory.
    public func read(at address: UInt64, length: Int) throws -> [UInt8] {
        Array(try checkedBuffer(at: address, length: length))
    }

    /// Reads a little-endian integer (x86 guests are little-endian) without alignment assumptions.
    public func load<T: FixedWidthInteger>(_: T.Type, at address: UInt64) throws -> T {
        let buffer = try checkedBuffer(at: address, length: MemoryLayout<T>.size)
        return T(littleEndian: buffer.loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer.
    public func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws {
        let buffer = try checkedBuffer(at: address, length: MemoryLayout<T>.size)
        buffer.storeBytes(of: value.littleEndian, as: T.self)
    }
}
