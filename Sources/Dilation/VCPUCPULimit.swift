import Foundation
import Synchronization

/// Holds each vCPU thread of a dilated machine to 1/TDF of a core with the CFS bandwidth limit, so
/// the guest, which sees time TDF times slow, perceives the speed of one core and not TDF of them
/// (DieCast's CPU scaling). One cgroup per vCPU thread, `m<machine>-vcpu<N>`, under a directory
/// this process shares among its machines, `<root>/streamvm-<pid>`:
///
/// - cgroup v2 (`cpu.max`): the cpu controller is enabled in the root's `cgroup.subtree_control`
///   when it is not yet (systemd hosts have it; a bare cgroup2 mount does not), the process moves
///   into that directory (a threaded domain) and back to the cgroup it came from at the end, each
///   vCPU thread into a threaded child with `cpu.max = period/TDF period`;
/// - cgroup v1 (`cpu.cfs_quota_us`, `cpu.cfs_period_us`): the thread's ID written to the child's
///   `tasks`.
///
/// A machine's children go when `remove()` is called after its threads have ended, the process
/// directory with the last of them; a later limit prunes directories of processes that are gone.
public final class VCPUCPULimit: Sendable {
    public enum Hierarchy: Sendable, Equatable {
        case v2(root: String)
        case v1(cpuMount: String)
    }

    /// CFS period: short enough that a guest sees its share as a steady rate, not 100 ms bursts.
    public static let periodMicroseconds = 10_000
    /// The kernel's smallest quota.
    public static let minimumQuotaMicroseconds = 1_000

    public let factor: DilationFactor
    public let hierarchy: Hierarchy
    /// `streamvm-<pid>` under the hierarchy's root.
    public let directory: String
    /// This limit's children are `m<machine>-vcpu<N>`.
    let machine: Int
    /// Serialises creating and removing process directories among this process's limits: the
    /// next machine number, and how many live limits use each directory.
    private static let processDirectory = Mutex<(next: Int, live: [String: Int], origin: [String: String])>((0, [:], [:]))
    public var quotaMicroseconds: Int {
        max(Self.minimumQuotaMicroseconds, Int((Double(Self.periodMicroseconds) / factor.value).rounded()))
    }

    /// Finds this host's cgroup hierarchy with the cpu controller and makes this process's directory.
    public convenience init(factor: DilationFactor) throws {
        try self.init(factor: factor, hierarchy: try Self.findHierarchy())
    }

    /// `ownCgroups`: the text of /proc/self/cgroup, whose `0::` line names the v2 cgroup this process
    /// returns to when its last limit goes.
    public init(factor: DilationFactor, hierarchy: Hierarchy,
                ownCgroups: String? = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) throws {
        self.factor = factor
        self.hierarchy = hierarchy
        let root: String
        switch hierarchy {
        case .v2(let path): root = path
        case .v1(let path): root = path
        }
        let directory = root + "/streamvm-\(getpid())"
        self.directory = directory
        machine = try Self.processDirectory.withLock { state in
            if state.live[directory, default: 0] == 0 {
                Self.pruneStale(under: root)
                try Self.makeDirectory(directory)
                if case .v2 = hierarchy {
                    try Self.enableCPUController(under: root)
                    // The process joins its own domain so its vCPU threads may go to threaded children.
                    state.origin[directory] = Self.unifiedCgroupPath(ownCgroups ?? "")
                    try Self.write("\(getpid())", to: directory + "/cgroup.procs")
                }
            }
            state.live[directory, default: 0] += 1
            state.next += 1
            return state.next
        }
    }

    /// Puts vCPU thread `threadID` in `vcpu<index>` with the limit. Call it on that thread before it
    /// enters the guest (`MachineConfiguration.vcpuThreadStarted`).
    public func place(vcpu index: Int, threadID: Int32) throws {
        let child = childPath(vcpu: index)
        try Self.makeDirectory(child)
        switch hierarchy {
        case .v2:
            try Self.write("threaded", to: child + "/cgroup.type")
            try Self.write("+cpu", to: directory + "/cgroup.subtree_control")
            try Self.write("\(quotaMicroseconds) \(Self.periodMicroseconds)", to: child + "/cpu.max")
            try Self.write("\(threadID)", to: child + "/cgroup.threads")
        case .v1:
            try Self.write("\(Self.periodMicroseconds)", to: child + "/cpu.cfs_period_us")
            try Self.write("\(quotaMicroseconds)", to: child + "/cpu.cfs_quota_us")
            try Self.write("\(threadID)", to: child + "/tasks")
        }
    }

    /// Throttled time so far per vCPU cgroup (`cpu.stat`'s throttled_usec, or throttled_time in ns on
    /// v1, as microseconds): proof the limit acted.
    public func throttledMicroseconds(vcpu index: Int) -> Int? {
        guard let text = try? String(contentsOfFile: childPath(vcpu: index) + "/cpu.stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            guard words.count == 2, let value = Int(words[1]) else { continue }
            if words[0] == "throttled_usec" { return value }
            if words[0] == "throttled_time" { return value / 1000 }
        }
        return nil
    }

    func childPath(vcpu index: Int) -> String { directory + "/m\(machine)-vcpu\(index)" }

    /// Removes this machine's cgroups once its vCPU threads have ended, and the process directory
    /// with the last limit (on v2 the process first goes back to the cgroup it came from, the
    /// parent). Call once.
    public func remove() {
        Self.processDirectory.withLock { state in
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix("m\(machine)-vcpu") {
                Self.removeCgroup(directory + "/" + name)
            }
            state.live[directory, default: 1] -= 1
            guard state.live[directory] == 0 else { return }
            state.live[directory] = nil
            if case .v2(let root) = hierarchy {
                // Back where the process came from; the root when that is gone or unknown.
                let origin = state.origin.removeValue(forKey: directory) ?? "/"
                if (try? Self.write("\(getpid())", to: root + (origin == "/" ? "" : origin) + "/cgroup.procs")) == nil {
                    try? Self.write("\(getpid())", to: root + "/cgroup.procs")
                }
            }
            Self.removeTree(directory)
        }
    }

    /// cgroup v2 when `/sys/fs/cgroup` is a cgroup2 mount offering cpu, else the v1 cpu mount.
    public static func findHierarchy(mounts: String? = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) throws -> Hierarchy {
        for line in (mounts ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 4 else { continue }
            let path = String(fields[1]), type = fields[2], options = fields[3].split(separator: ",")
            if type == "cgroup2",
               let controllers = try? String(contentsOfFile: path + "/cgroup.controllers", encoding: .utf8),
               controllers.split(whereSeparator: \.isWhitespace).contains("cpu") {
                return .v2(root: path)
            }
            if type == "cgroup", options.contains("cpu") { return .v1(cpuMount: path) }
        }
        throw DilationError.noCPUController
    }

    /// cgroup v2: a child of the root has the cpu controller only when the root's subtree_control
    /// enables it.
    static func enableCPUController(under root: String) throws {
        let enabled = (try? String(contentsOfFile: root + "/cgroup.subtree_control", encoding: .utf8)) ?? ""
        guard !enabled.split(whereSeparator: \.isWhitespace).contains("cpu") else { return }
        try write("+cpu", to: root + "/cgroup.subtree_control")
    }

    /// The path of the `0::` (unified hierarchy) line of a /proc/<pid>/cgroup text; "/" without one.
    static func unifiedCgroupPath(_ text: String) -> String {
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            let path = String(line.dropFirst(3))
            return path.hasPrefix("/") && !path.contains("..") ? path : "/"
        }
        return "/"
    }

    /// Directories `streamvm-<pid>` of processes that are gone.
    static func pruneStale(under root: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where name.hasPrefix("streamvm-") {
            guard let pid = Int32(name.dropFirst("streamvm-".count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            removeTree(root + "/" + name)
        }
    }

    static func removeTree(_ path: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where name.hasPrefix("m") && name.contains("-vcpu") {
            removeCgroup(path + "/" + name)
        }
        removeCgroup(path)
    }

    /// rmdir of a cgroup, waiting (up to 5 s) while it is busy: a joined thread has left user space
    /// (the kernel clears its tid in exit_mm) before it leaves its cgroup (cgroup_exit, later in
    /// do_exit), so right after the join the group can still count it.
    static func removeCgroup(_ path: String) {
        for _ in 0..<500 {
            if rmdir(path) == 0 || errno != EBUSY { return }
            usleep(10_000)
        }
    }

    static func makeDirectory(_ path: String) throws {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw DilationError.cgroup(path: path, problem: String(cString: strerror(errno)))
        }
    }

    /// cgroup files take one value per write(2); a refusal names the file and the kernel's reason.
    static func write(_ value: String, to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw DilationError.cgroup(path: path, problem: String(cString: strerror(errno))) }
        defer { close(descriptor) }
        let bytes = Array(value.utf8)
        guard Foundation.write(descriptor, bytes, bytes.count) == bytes.count else {
            throw DilationError.cgroup(path: path, problem: "writing '\(value)': \(String(cString: strerror(errno)))")
        }
    }
}
