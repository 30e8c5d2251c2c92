/// The memory API other modules (Dedup, migration) use instead of reaching into the machine:
/// dropping pages so they fault to the registered page source, and KVM's dirty-page log.
/// docs/hypervisor.md ("Guest memory for other modules") says what each costs per backing.
extension Machine {
    /// Drops `pages` (page indices in backing order) from guest RAM. With a page-fault handler
    /// (`MachineConfiguration.pageSource`, or a restore) their next touch faults to its source;
    /// without one they read as zeros. Safe on a paused machine; on a running one, only for pages
    /// the source can give back exactly (a write racing the drop would be lost).
    public func discardPages(_ pages: Range<Int>) throws {
        if let pageFaultHandler {
            try pageFaultHandler.discard(pages: pages)
        } else {
            try memory.discard(pages: pages)
        }
    }

    /// Starts KVM's dirty-page log on all of guest RAM; `dirtyPages()` then returns what the guest
    /// wrote. Writes the VMM makes on the guest's behalf (virtio device buffers, page installs) are
    /// not in KVM's log: a migration must account for those itself (see docs/hypervisor.md).
    public func startDirtyPageTracking() throws {
        try virtualMachine.setDirtyPageLogging(true)
    }

    public func stopDirtyPageTracking() throws {
        try virtualMachine.setDirtyPageLogging(false)
    }

    /// Page indices (backing order, as `GuestMemory` and page sources number them) the guest wrote
    /// since tracking started or since the last call, ascending.
    public func dirtyPages() throws -> [Int] {
        var pages: [Int] = []
        for slot in virtualMachine.memorySlots where !slot.readOnly {
            guard let region = memory.regions.first(where: { $0.guestAddress == slot.guestAddress }) else { continue }
            let firstPage = region.fileOffset / GuestMemory.pageSize
            for (wordIndex, word) in try virtualMachine.takeDirtyLog(slot: slot).enumerated() where word != 0 {
                var bits = word
                while bits != 0 {
                    let bit = bits.trailingZeroBitCount
                    pages.append(firstPage + wordIndex * 64 + bit)
                    bits &= bits - 1
                }
            }
        }
        return pages
    }
}
