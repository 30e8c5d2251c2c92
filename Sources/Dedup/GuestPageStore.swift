import Hypervisor

/// One machine's dropped pages, and its page source: give it as `MachineConfiguration.pageSource`
/// so userfaultfd is registered on all of RAM, then `DedupEngine.attach`. A page the guest never
/// touched and a page the engine does not hold read as zeros (a fresh boot's RAM); a page the engine
/// dropped is rebuilt byte for byte from its `StoredPage` and forgotten (it is the guest's again).
///
/// Every fault is also noted for the engine's clock: a page that faulted back was referenced.
public final class GuestPageStore: PageSource, @unchecked Sendable {
    public let pageSize: Int
    public let pageCount: Int
    let codec: PageCodec
    let index: ReferenceIndex
    let counters: Locked<DedupStatistics>
    private struct State {
        var stored: [Int: StoredPage] = [:]
        /// Pages installed (faulted in) since the engine last looked.
        var faulted: [Int] = []
    }
    private let state = Locked(State())

    init(memorySize: Int, engine: DedupEngine) throws {
        pageSize = GuestMemory.pageSize
        guard memorySize > 0, memorySize % pageSize == 0 else {
            throw DedupError.unalignedSpace(name: "guest RAM", length: memorySize, pageSize: pageSize)
        }
        pageCount = memorySize / pageSize
        codec = engine.codec
        index = engine.index
        counters = engine.counters
    }

    /// Pages the engine holds right now.
    public var storedPageCount: Int { state.withLock { $0.stored.count } }

    public func readPage(_ page: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        guard page >= 0, page < pageCount else { throw PageSourceError(page: page, problem: "beyond the \(pageCount)-page guest RAM") }
        let entry = state.withLock { state in
            state.faulted.append(page)
            return state.stored.removeValue(forKey: page)
        }
        guard let entry else { return .zero }
        defer { forget(entry, served: true) }
        // The handler's buffer may be longer than one page; exactly one page is rebuilt.
        let buffer = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<pageSize])
        switch entry {
        case .zero:
            return .zero
        case let .shared(reference):
            buffer.copyMemory(from: UnsafeRawBufferPointer(reference.bytes))
        case let .patched(reference, delta):
            do { try codec.decode(delta, reference: UnsafeRawBufferPointer(reference.bytes), into: buffer) } catch {
                throw PageSourceError(page: page, problem: "dedup patch does not apply: \(error)")
            }
        case let .compressed(bytes):
            do { try codec.decode(bytes, into: buffer) } catch {
                throw PageSourceError(page: page, problem: "dedup compressed page does not decode: \(error)")
            }
        }
        return .data
    }

    /// Keeps `entry` for `page` (before the page is dropped: a page still present never faults).
    func keep(_ entry: StoredPage, for page: Int) {
        state.withLock { $0.stored[page] = entry }
        counters.withLock { counters in
            counters.storedPages[entry.kind, default: 0] += 1
            counters.encodedBytes += entry.encodedBytes
            if entry.encodedBytes > 0 { counters.encodedBytesBy[entry.kind, default: 0] += entry.encodedBytes }
        }
    }

    /// Takes back an entry whose page could not be dropped.
    func unkeep(_ page: Int) {
        if let entry = state.withLock({ $0.stored.removeValue(forKey: page) }) { forget(entry, served: false) }
    }

    /// Pages faulted in since the last call.
    func takeFaulted() -> [Int] {
        state.withLock { state in
            defer { state.faulted.removeAll(keepingCapacity: true) }
            return state.faulted
        }
    }

    /// Drops every entry (the machine is gone); references other machines use stay alive.
    func releaseAll() {
        let entries = state.withLock { state in
            defer { state.stored.removeAll() }
            return Array(state.stored.values)
        }
        entries.forEach { forget($0, served: false) }
    }

    private func forget(_ entry: StoredPage, served: Bool) {
        counters.withLock { counters in
            counters.storedPages[entry.kind, default: 0] -= 1
            counters.encodedBytes -= entry.encodedBytes
            if entry.encodedBytes > 0 { counters.encodedBytesBy[entry.kind, default: 0] -= entry.encodedBytes }
            if served { counters.faultsServed[entry.kind, default: 0] += 1 }
        }
        if let reference = entry.reference { index.release(reference) }
    }
}
