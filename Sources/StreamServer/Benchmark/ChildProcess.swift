import Foundation

/// Starts and stops the benchmark's helper processes (the server under test, nginx, h2load). Every
/// child started here is stopped by its own PID, never by name.
final class ChildProcess: @unchecked Sendable {
    let process: Process
    let name: String

    /// util-linux's taskset, which pins a program to CPUs and then executes it in the same process.
    static let taskset = "/usr/bin/taskset"

    /// Starts `executable` with output to `logFile`, pinned to the taskset CPU list `cpus` if given.
    init(_ executable: String, arguments: [String], logFile: String, cpus: String? = nil) throws {
        process = Process()
        if let cpus {
            process.executableURL = URL(fileURLWithPath: Self.taskset)
            process.arguments = ["-c", cpus, executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        FileManager.default.createFile(atPath: logFile, contents: nil)
        let log = FileHandle(forWritingAtPath: logFile)
        process.standardOutput = log
        process.standardError = log
        name = (executable as NSString).lastPathComponent
        do { try process.run() } catch {
            throw ServerError.benchmarkFailed("cannot start \(executable): \(error)")
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    func stop(grace: TimeInterval = 5) {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Runs a program to completion and returns its standard output; fails on a non-zero exit.
    static func runToCompletion(_ executable: String, arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch {
            throw ServerError.benchmarkFailed("cannot start \(executable): \(error)")
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ServerError.benchmarkFailed("\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus):\n\(output.suffix(2000))")
        }
        return output
    }

    /// A free loopback TCP port (bound and released; a race with other processes is possible but rare).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerError.benchmarkFailed("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw ServerError.benchmarkFailed("cannot find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`.
    static func waitForListener(port: Int, timeout: TimeInterval, child: ChildProcess) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard child.process.isRunning else {
                throw ServerError.benchmarkFailed("\(child.name) exited with status \(child.process.terminationStatus) before listening")
            }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if connected { return }
            usleep(50_000)
        }
        throw ServerError.benchmarkFailed("\(child.name) did not listen on port \(port) within \(Int(timeout)) s")
    }
}
