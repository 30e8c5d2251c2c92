import CKVM
import Glibc

/// Guest RAM: one memfd, mapped shared into this process and into the guest. A memfd (rather than
/// anonymous memory) lets pages later be filled lazily (userfaultfd), snapshotted, or remapped by
/// dedup without copying the whole of RAM.
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
    /// The memfd holding all of RAM.
    public let fileDescriptor: Int32
    private let mapping: UnsafeMutableRawPointer

    /// Allocates `size` bytes of zeroed guest RAM starting at guest-physical 0.
    public init(size: Int) throws {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard size > 0, size % pageSize == 0 else { throw HypervisorError.invalidConfiguration("memory size \(size) is not a positive multiple of \(pageSize)") }
        let fd = ckvm_memfd_create("streamvm-guest-ram", CKVM_MFD_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.system(call: "memfd_create", errno: errno) }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let error = errno
            close(fd)
            throw HypervisorError.system(call: "ftruncate", errno: error)
        }
        // MAP_NORESERVE: untouched guest pages cost nothing, so a large guest starts instantly.
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0)
        guard let address, address != MAP_FAILED else {
            let error = errno
            close(fd)
            throw HypervisorError.system(call: "mmap", errno: error)
        }
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
        close(fileDescriptor)
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
