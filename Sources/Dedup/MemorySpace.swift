import Hypervisor

/// A named range of host memory to scan, such as one running appliance's guest RAM.
///
/// The scanner only reads it; the caller keeps the memory mapped (and the VM paused, or accepts
/// that a page changing during the scan is classified by whichever bytes were read).
public struct MemorySpace: @unchecked Sendable {
    public let name: String
    public let bytes: UnsafeRawBufferPointer

    public init(name: String, bytes: UnsafeRawBufferPointer) {
        self.name = name
        self.bytes = bytes
    }

    /// One space per RAM region of a guest, named `<name>@<guest address>`.
    public static func regions(of memory: GuestMemory, name: String) -> [MemorySpace] {
        memory.regions.map { region in
            MemorySpace(name: "\(name)@0x\(String(region.guestAddress, radix: 16))",
                        bytes: UnsafeRawBufferPointer(start: region.host, count: region.length))
        }
    }
}
