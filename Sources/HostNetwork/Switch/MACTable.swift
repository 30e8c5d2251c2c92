import Hypervisor

/// Where each source MAC was last seen: the learning half of the switch. Entries expire after
/// `aging` without traffic from that MAC, so a guest that moved (or went away) is flooded to again
/// rather than black-holed. The table has a size cap: an uplink port carrying many MACs cannot
/// grow it without bound; beyond the cap new MACs are not learned (their frames are flooded).
struct MACTable {
    private struct Entry {
        var port: Int
        var lastSeen: UInt64
    }

    private var entries: [MACAddress: Entry] = [:]
    private let agingNanoseconds: UInt64
    private let capacity: Int
    private var nextSweep: UInt64 = 0

    init(agingNanoseconds: UInt64, capacity: Int = 8192) {
        self.agingNanoseconds = agingNanoseconds
        self.capacity = capacity
    }

    var count: Int { entries.count }

    mutating func learn(_ mac: MACAddress, port: Int, now: UInt64) {
        guard !mac.isMulticast else { return }
        if entries[mac] != nil || entries.count < capacity {
            entries[mac] = Entry(port: port, lastSeen: now)
        }
    }

    /// The port `mac` was last seen on, if that was within the aging time.
    func port(of mac: MACAddress, now: UInt64) -> Int? {
        guard let entry = entries[mac], now &- entry.lastSeen <= agingNanoseconds else { return nil }
        return entry.port
    }

    /// Drops expired entries; cheap to call often (it sweeps at most every half aging period).
    mutating func expire(now: UInt64) {
        guard now >= nextSweep else { return }
        nextSweep = now + agingNanoseconds / 2
        entries = entries.filter { now &- $0.value.lastSeen <= agingNanoseconds }
    }

    /// Forgets every MAC learned on `port` (the port went away).
    mutating func forget(port: Int) {
        entries = entries.filter { $0.value.port != port }
    }
}
