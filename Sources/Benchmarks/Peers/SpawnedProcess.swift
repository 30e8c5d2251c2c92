import Foundation
import Catalog
import Hypervisor
import StreamBoot
import StreamServer
import StreamClient

/// Every helper program benchmarks and real-peer tests start (nginx, h2load, curl, openssl, the
/// server under test, C baselines) is started here and stopped by its own PID, never by name.
///
/// Why not Foundation's `Process`: a child inherits the signal mask of the thread that spawns it,
/// and Dispatch and Swift-concurrency worker threads block SIGTERM, SIGINT, SIGQUIT and SIGHUP.
/// nginx with `master_process off` never resets its mask, so a SIGTERM from `Process.terminate()`
/// stayed pending forever, and `waitUntilExit()` hung the test that called it (and, on a 2-core host,
/// the whole cooperative pool). Here the child starts with an empty mask and default dispositions,
/// `stop` escalates to SIGKILL after a grace period, and every wait is bounded.
///
/// The child also gets SIGKILL when the process that started it dies (`setpriv --pdeathsig`), so a
/// test run killed by a timeout leaves no helper behind. Linux delivers that signal when the
/// *thread* that spawned the child exits, so each child is spawned by its own waiter thread, which
/// lives exactly as long as the child and reaps it.
public final class SpawnedProcess: @unchecked Sendable {
    public let executable: String
    /// Process id of the child (setpriv execs the program, so this is the program's own pid).
    public let pid: pid_t
    private let state: ChildState

    /// What the waiter thread learns, shared without keeping the `SpawnedProcess` alive.
    private final class ChildState: @unchecked Sendable {
        let lock = NSLock()
        let started = DispatchSemaphore(value: 0)
        let exited = DispatchSemaphore(value: 0)
        var pid: pid_t = 0
        var spawnError: Int32 = 0
        var exitStatus: Int32?
    }

    /// util-linux (essential in Debian): sets the parent-death signal, then execs the program.
    static let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// util-linux's taskset: pins a program to CPUs, then execs it (so the pid stays the program's).
    static let taskset = "/usr/bin/taskset"

    /// Starts `executable` with `arguments`; standard output goes to `logPath` (or nowhere), standard
    /// error to `errorPath` (nil: the same file). `cpus`, a taskset CPU list ("0", "0-1"), pins it.
    public init(executable: String, arguments: [String], logPath: String? = nil, errorPath: String? = nil, cpus: String? = nil) throws {
        self.executable = executable
        var argv = [executable] + arguments
        if let cpus { argv = [Self.taskset, "-c", cpus] + argv }
        if let setpriv = Self.setpriv { argv = [setpriv, "--pdeathsig", "KILL", "--"] + argv }
        let state = ChildState()
        let spawnArguments = argv
        let log = logPath ?? "/dev/null"
        let errorLog = errorPath
        let thread = Thread {
            var child: pid_t = 0
            let error = Self.spawn(spawnArguments, logPath: log, errorPath: errorLog, pid: &child)
            state.lock.withLock {
                state.pid = child
                state.spawnError = error
            }
            state.started.signal()
            guard error == 0 else { return }
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            state.lock.withLock { state.exitStatus = status }
            state.exited.signal()
        }
        thread.name = "streamvm-child-\((executable as NSString).lastPathComponent)"
        thread.start()
        state.started.wait()
        let (child, error) = state.lock.withLock { (state.pid, state.spawnError) }
        guard error == 0 else { throw ClientError.benchmark("cannot start \(argv[0]): \(String(cString: strerror(error)))") }
        self.pid = child
        self.state = state
    }

    deinit { stop() }

    /// Whether the child is still running.
    public var isRunning: Bool { state.lock.withLock { state.exitStatus == nil } }

    /// The signal that ended the child, or nil while it runs or when it exited normally.
    public var terminationSignal: Int32? {
        state.lock.withLock {
            guard let status = state.exitStatus, status & 0x7f != 0 else { return nil }
            return status & 0x7f  // WTERMSIG
        }
    }

    /// The exit status (`exit`'s argument) once the child exited normally; nil while it runs or
    /// when a signal ended it.
    public var exitStatus: Int32? {
        state.lock.withLock {
            guard let status = state.exitStatus, status & 0x7f == 0 else { return nil }
            return (status >> 8) & 0xff  // WEXITSTATUS
        }
    }

    /// Waits until the child exits, at most `timeout` seconds; whether it did.
    @discardableResult
    public func waitForExit(timeout: Double) -> Bool {
        guard isRunning else { return true }
        guard state.exited.wait(timeout: .now() + timeout) == .success else { return false }
        state.exited.signal()
        return true
    }

    /// Runs a program to completion (stopping it after `timeout` seconds) and returns its exit status
    /// (-1: ended by a signal) and standard output; standard error is added to the output unless
    /// `separateErrors`, which drops it (for a program whose output is parsed, such as JSON).
    public static func run(_ executable: String, arguments: [String], cpus: String? = nil, separateErrors: Bool = false,
                           timeout: Double = 3600) throws -> (status: Int32, output: String) {
        var template = Array("/tmp/streamvm-output-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw ClientError.io(path: "/tmp/streamvm-output-XXXXXX", errno: errno) }
        close(fd)
        let outputPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(outputPath) }
        let child = try SpawnedProcess(executable: executable, arguments: arguments, logPath: outputPath,
                                       errorPath: separateErrors ? "/dev/null" : nil, cpus: cpus)
        if !child.waitForExit(timeout: timeout) {
            child.stop()
            throw ClientError.benchmark("\(executable) did not finish within \(Int(timeout)) s")
        }
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        return (child.exitStatus ?? -1, output)
    }

    /// `run`, failing with the end of its output when the program exits with a non-zero status.
    public static func runChecked(_ executable: String, arguments: [String], cpus: String? = nil) throws -> String {
        let (status, output) = try run(executable, arguments: arguments, cpus: cpus)
        guard status == 0 else {
            throw ClientError.benchmark("\(executable) \(arguments.joined(separator: " ")) exited with status \(status): \(output.suffix(2000))")
        }
        return output
    }

    /// Sends SIGTERM, waits up to `grace` seconds, then SIGKILL and waits again (bounded).
    /// Idempotent; returns at once if the child already exited.
    public func stop(grace: Double = 3) {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        if state.exited.wait(timeout: .now() + grace) == .success { state.exited.signal(); return }
        kill(pid, SIGKILL)
        // SIGKILL cannot be blocked or caught; the waiter reaps the child within milliseconds.
        if state.exited.wait(timeout: .now() + 10) == .success { state.exited.signal() }
    }

    /// Open descriptors above 2 without close-on-exec (glibc's closefrom action is not importable).
    /// One closed by another thread meanwhile is harmless: glibc ignores EBADF for close actions.
    private static func inheritableDescriptors() -> [Int32] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return [] }
        return names.compactMap(Int32.init).filter { fd in
            guard fd > 2 else { return false }
            let flags = fcntl(fd, F_GETFD)
            return flags >= 0 && flags & FD_CLOEXEC == 0
        }
    }

    /// posix_spawn with an empty signal mask, default dispositions, and no inherited descriptors
    /// beyond 0-2 (a leaked socket of another test would otherwise stay open as long as the child).
    private static func spawn(_ argv: [String], logPath: String, errorPath: String?, pid: inout pid_t) -> Int32 {
        var attributes = posix_spawnattr_t()
        var actions = posix_spawn_file_actions_t()
        posix_spawnattr_init(&attributes)
        posix_spawn_file_actions_init(&actions)
        defer {
            posix_spawnattr_destroy(&attributes)
            posix_spawn_file_actions_destroy(&actions)
        }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        if let errorPath {
            posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        for fd in inheritableDescriptors() { posix_spawn_file_actions_addclose(&actions, fd) }
        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        return posix_spawn(&pid, argv[0], &actions, &attributes, &cArguments, environ)
    }
}
