import Benchmarks
import Dilation
import Foundation
import Hypervisor
import Logging
import TestSupport
import Testing

/// Which cgroup hierarchy the CPU limit uses, read from a mount table.
@Suite struct CgroupHierarchyTests {
    @Test func aV1CPUMountIsFoundAndAMountTableWithoutOneIsAnError() throws {
        let v1 = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
        #expect(try VCPUCPULimit.findHierarchy(mounts: v1) == .v1(cpuMount: "/sys/fs/cgroup/cpu"))
        #expect(throws: DilationError.noCPUController) {
            try VCPUCPULimit.findHierarchy(mounts: "proc /proc proc rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")
        }
    }

    @Test func aCgroup2MountCountsOnlyWhenItOffersCPU() throws {
        let scratch = try TemporaryDirectory("streamvm-cgroup2")
        let table = "cgroup2 \(scratch.path) cgroup2 rw,nosuid 0 0\n"
        try "memory pids\n".write(toFile: scratch.sub("cgroup.controllers"), atomically: true, encoding: .utf8)
        #expect(throws: DilationError.noCPUController) { try VCPUCPULimit.findHierarchy(mounts: table) }
        try "cpuset cpu io memory pids\n".write(toFile: scratch.sub("cgroup.controllers"), atomically: true, encoding: .utf8)
        #expect(try VCPUCPULimit.findHierarchy(mounts: table) == .v2(root: scratch.path))
    }

    @Test func theQuotaIsAPeriodOverTheFactorAndNeverBelowTheKernelsMinimum() throws {
        let scratch = try TemporaryDirectory("streamvm-cgroup-quota")
        let quarter = try VCPUCPULimit(factor: try DilationFactor(4), hierarchy: .v1(cpuMount: scratch.path))
        let thousandth = try VCPUCPULimit(factor: try DilationFactor(1000), hierarchy: .v1(cpuMount: scratch.path))
        #expect(quarter.quotaMicroseconds == 2_500 && thousandth.quotaMicroseconds == 1_000)
        #expect(FileManager.default.fileExists(atPath: scratch.sub("streamvm-\(getpid())")))
        quarter.remove()
        #expect(FileManager.default.fileExists(atPath: scratch.sub("streamvm-\(getpid())")), "kept while another limit uses it")
        thousandth.remove()
        #expect(!FileManager.default.fileExists(atPath: scratch.sub("streamvm-\(getpid())")), "removed with the last limit")
    }
}

/// The cgroup v2 steps a limit takes, on plain files standing in for a cgroup2 mount (this host has
/// cgroup v1, so the real v2 path runs only where v2 is mounted).
@Suite struct CgroupV2StepsTests {
    @Test func theRootGetsTheCPUControllerAndTheProcessGoesBackWhereItCameFrom() throws {
        let scratch = try TemporaryDirectory("streamvm-cgroup2-steps")
        let own = scratch.sub("streamvm-\(getpid())")
        try FileManager.default.createDirectory(atPath: own, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch.sub("user.slice/session.scope"), withIntermediateDirectories: true)
        for file in ["cgroup.procs", "user.slice/session.scope/cgroup.procs", "streamvm-\(getpid())/cgroup.procs"] {
            FileManager.default.createFile(atPath: scratch.sub(file), contents: Data())
        }
        try "memory pids\n".write(toFile: scratch.sub("cgroup.subtree_control"), atomically: false, encoding: .utf8)
        let limit = try VCPUCPULimit(factor: try DilationFactor(2), hierarchy: .v2(root: scratch.path),
                                     ownCgroups: "1:name=systemd:/x\n0::/user.slice/session.scope\n")
        let control = try String(contentsOfFile: scratch.sub("cgroup.subtree_control"), encoding: .utf8)
        #expect(control.hasPrefix("+cpu"), "the root enables cpu for its children: \(control)")
        #expect(try String(contentsOfFile: own + "/cgroup.procs", encoding: .utf8) == "\(getpid())")
        limit.remove()
        #expect(try String(contentsOfFile: scratch.sub("user.slice/session.scope/cgroup.procs"), encoding: .utf8) == "\(getpid())",
                "the process went back to its own cgroup, not the root")
        #expect(try String(contentsOfFile: scratch.sub("cgroup.procs"), encoding: .utf8).isEmpty)
    }

    @Test func aRootThatAlreadyEnablesCPUIsLeftAsItIs() throws {
        let scratch = try TemporaryDirectory("streamvm-cgroup2-enabled")
        try FileManager.default.createDirectory(atPath: scratch.sub("streamvm-\(getpid())"), withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: scratch.sub("streamvm-\(getpid())/cgroup.procs"), contents: Data())
        FileManager.default.createFile(atPath: scratch.sub("cgroup.procs"), contents: Data())
        try "cpuset cpu io memory pids\n".write(toFile: scratch.sub("cgroup.subtree_control"), atomically: false, encoding: .utf8)
        let limit = try VCPUCPULimit(factor: try DilationFactor(2), hierarchy: .v2(root: scratch.path), ownCgroups: "")
        #expect(try String(contentsOfFile: scratch.sub("cgroup.subtree_control"), encoding: .utf8) == "cpuset cpu io memory pids\n")
        limit.remove()
        #expect(try String(contentsOfFile: scratch.sub("cgroup.procs"), encoding: .utf8) == "\(getpid())", "no 0:: line: back to the root")
    }
}

/// A dilated guest's vCPU thread held to 1/TDF of a core on this host's real cgroup hierarchy.
@Suite(.enabled(if: KVMSystem.isAvailable && getuid() == 0 && (try? VCPUCPULimit.findHierarchy()) != nil,
                "needs /dev/kvm, root and a cgroup cpu controller: vCPU CPU limit tests skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct VCPUCPULimitTests {
    @Test func aLimitedVCPUUsesNoMoreThanItsShareAndTheCgroupIsRemoved() throws {
        let probe = try CPURateProbe.run(guestImage: try DilatedGuestTests.image.get(), factor: try DilationFactor(4), limit: true,
                                         rounds: 4, work: 20_000, logger: Logger(label: "test-dilation-cpu"))
        let share = try #require(probe.coreShare, "the vCPU thread's CPU time was read")
        // Load can only lower the share; boot and the last partial period are the slack.
        #expect(share <= 0.25 * 1.2 + 0.05, "core share \(share) over \(probe.realSeconds) s for a 1/4 core limit")
        #expect(probe.throttledSeconds != nil, "the vCPU's cgroup reported its throttling")
        let hierarchy = try VCPUCPULimit.findHierarchy()
        let root = switch hierarchy { case .v1(let path): path; case .v2(let path): path }
        #expect(!FileManager.default.fileExists(atPath: root + "/streamvm-\(getpid())"), "the cgroup directory is gone after the run")
    }
}
