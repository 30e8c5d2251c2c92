/// A one-byte port a guest writes to power off with an exit code. Test guests use it; it follows
/// QEMU's `isa-debug-exit` convention (port 0x501) so the same guest binary runs on both.
public final class PowerOffPort: BusDevice {
    public static let port: UInt64 = 0x501
    public static let windowLength: UInt64 = 1

    private let requestPowerOff: @Sendable (UInt8) -> Void

    public init(requestPowerOff: @escaping @Sendable (UInt8) -> Void) {
        self.requestPowerOff = requestPowerOff
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        data.storeLittleEndian(0)
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        requestPowerOff(data.first ?? 0)
    }
}
