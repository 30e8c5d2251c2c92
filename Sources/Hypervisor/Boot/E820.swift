/// One entry of the BIOS e820 memory map (ACPI 6.5 §15, "System Address Map Interfaces").
public struct E820Entry: Equatable, Sendable {
    public enum Kind: UInt32, Sendable {
        case ram = 1
        case reserved = 2
    }

    public var address: UInt64
    public var size: UInt64
    public var kind: Kind

    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address
        self.size = size
        self.kind = kind
    }

    /// The guest's map: low RAM up to the EBDA, the EBDA reserved (MP table), then RAM from 1 MiB,
    /// split around the 32-bit MMIO hole when RAM reaches it.
    public static func map(for memory: [GuestMemory.Region]) -> [E820Entry] {
        var entries = [E820Entry(address: 0, size: GuestLayout.ebdaStart, kind: .ram),
                       E820Entry(address: GuestLayout.ebdaStart, size: GuestLayout.lowMemoryEnd - GuestLayout.ebdaStart, kind: .reserved)]
        for region in memory {
            let start = max(region.guestAddress, GuestLayout.kernelLoadAddress)
            guard region.guestEnd > start else { continue }
            entries.append(E820Entry(address: start, size: region.guestEnd - start, kind: .ram))
        }
        return entries
    }
}
