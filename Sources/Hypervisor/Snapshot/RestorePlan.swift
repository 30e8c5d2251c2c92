/// How `Machine` resumes a saved machine instead of booting: the saved state, where guest RAM's
/// pages come from, and how they are served.
public struct RestorePlan: Sendable {
    public enum MemoryLoading: String, Sendable, Codable {
        /// Pages are mapped on first touch (userfaultfd): the guest resumes before its memory is present.
        case lazy
        /// Every page is mapped before the vCPUs start (the "read all memory first" baseline).
        case eager
    }

    public var state: MachineSnapshot
    public var pages: any PageSource
    public var loading: MemoryLoading
    public var waitMode: PageFaultHandler.WaitMode
    /// Parallel page fetches (0: the fault reader serves each page itself; see `PageFaultHandler`).
    public var fetchThreads: Int
    /// Typed into the guest's serial console as the machine resumes, so an appliance that waits
    /// after its ready marker learns it was resumed (only a resumed guest gets it); empty: nothing.
    public var consoleInputOnResume: [UInt8] = RestorePlan.resumedLine

    /// With lazy loading: pages mapped before the vCPUs start (a recorded working set, e.g. the
    /// pages an earlier resume touched before it was ready); every other page still comes on first touch.
    public var prefetchPages: [Int] = []

    /// The console line a resumed guest receives (appliances/linux's init waits for it); a caller
    /// may append space-separated arguments after the marker.
    public static let resumedMarker = "STREAMVM-RESUMED"
    public static let resumedLine = Array((resumedMarker + "\n").utf8)

    public init(state: MachineSnapshot, pages: any PageSource, loading: MemoryLoading = .lazy,
                waitMode: PageFaultHandler.WaitMode = .blocking, fetchThreads: Int = 0) {
        self.state = state
        self.pages = pages
        self.loading = loading
        self.waitMode = waitMode
        self.fetchThreads = fetchThreads
    }

    /// Reads vmstate.json from `directory` and opens its memory.img as a lazily read, verified page source.
    public static func load(directory: String, loading: MemoryLoading = .lazy) throws -> RestorePlan {
        try load(statePath: directory + "/" + MachineSnapshot.stateFileName,
                 memoryPath: directory + "/" + MachineSnapshot.memoryFileName, loading: loading)
    }

    /// Reads the state file and opens the memory image saved by `saveSnapshot(statePath:memoryPath:)`.
    public static func load(statePath: String, memoryPath: String, loading: MemoryLoading = .lazy) throws -> RestorePlan {
        guard let handle = FileHandleReader(path: statePath) else {
            throw HypervisorError.invalidSnapshot("cannot read \(statePath)")
        }
        let state = try MachineSnapshot.decode(try handle.readAll(limit: Self.maximumStateBytes))
        let pages = try SnapshotFilePageSource(path: memoryPath, image: state.memory)
        return RestorePlan(state: state, pages: pages, loading: loading)
    }

    /// vmstate.json larger than this is refused before parsing (a 1 TiB guest's digest table is ~350 MiB of base64).
    static let maximumStateBytes = 512 << 20
}
