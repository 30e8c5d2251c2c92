/// Maps non-overlapping address ranges (I/O ports or guest-physical MMIO) to devices. Built once
/// while the machine is assembled, then only read, so it is a value shared by every vCPU thread.
public struct Bus: Sendable {
    struct Entry: Sendable {
        let start: UInt64
        let length: UInt64
        let device: any BusDevice
        var end: UInt64 { start + length }
    }

    /// Sorted by `start`, never overlapping.
    private(set) var entries: [Entry] = []

    public init() {}

    /// Adds `device` for [start, start+length); throws when the window is empty, wraps, or overlaps.
    public mutating func insert(_ device: any BusDevice, at start: UInt64, length: UInt64) throws {
        guard length > 0, start <= UInt64.max - length else { throw HypervisorError.busRangeOverlap(start: start, length: length) }
        let position = entries.firstIndex { $0.start >= start } ?? entries.count
        if position < entries.count, entries[position].start < start + length {
            throw HypervisorError.busRangeOverlap(start: start, length: length)
        }
        if position > 0, entries[position - 1].end > start {
            throw HypervisorError.busRangeOverlap(start: start, length: length)
        }
        entries.insert(Entry(start: start, length: length, device: device), at: position)
    }

    /// The device whose window contains `address`, and the offset into that window.
    public func resolve(_ address: UInt64) -> (device: any BusDevice, offset: UInt64)? {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].end <= address {
                low = middle + 1
            } else {
                high = middle
            }
        }
        guard low < entries.count, entries[low].start <= address else { return nil }
        return (entries[low].device, address - entries[low].start)
    }

    /// Reads `length` bytes at `address`; nil when no device is there.
    public func read(_ address: UInt64, length: Int) -> [UInt8]? {
        guard let (device, offset) = resolve(address) else { return nil }
        var bytes = [UInt8](repeating: 0, count: length)
        bytes.withUnsafeMutableBytes { device.read(offset: offset, into: $0) }
        return bytes
    }

    /// Writes `bytes` at `address`; false when no device is there.
    @discardableResult
    public func write(_ address: UInt64, _ bytes: [UInt8]) -> Bool {
        guard let (device, offset) = resolve(address) else { return false }
        bytes.withUnsafeBytes { device.write(offset: offset, from: $0) }
        return true
    }
}
