import ArgumentParser
import ControlAPI
import Foundation

/// `streamvm stop|pause|resume NAME`: drive a registered appliance through its control API
/// (PUT /actions InstanceStop, PATCH /vm Paused|Resumed).
struct InstanceTarget: ParsableArguments {
    @Argument(help: "The instance's name, as `streamvm ps` lists it.")
    var name: String

    @OptionGroup var runtime: RuntimeDirectoryOption

    @OptionGroup var configFile: ConfigFileOption

    /// The live registration under `name`, or an error saying why there is none.
    func locate() throws -> (directory: RuntimeDirectory, registration: InstanceRegistration) {
        let directory = RuntimeDirectory(path: runtime.resolve(try configFile.load().file).value)
        guard InstanceRegistration.isValidName(name), let entry = directory.entry(named: name) else {
            throw ValidationError("no instance '\(name.prefix(60))' is registered in \(directory.path) (see `streamvm ps`)")
        }
        guard let registration = entry.registration, entry.isLive else {
            throw ValidationError("\(name) is not running: \(entry.problem ?? "unknown") (`streamvm ps --prune` removes the entry)")
        }
        return (directory, registration)
    }

    /// Sends one request and turns a refusal into the API's own message.
    func send(_ method: String, _ path: String, json: String) throws {
        let registration = try locate().registration
        let reply = try ControlAPIClient(socketPath: registration.socket).send(method, path, json: json)
        guard (200..<300).contains(reply.status) else {
            throw ValidationError("\(name): \(reply.fault ?? "the control API answered \(reply.status)")")
        }
    }
}

struct StopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Stop a running appliance by name (its `run`/`boot` ends as on SIGTERM).")

    @OptionGroup var target: InstanceTarget

    @Option(help: "Seconds to wait for the instance to exit (0: do not wait).")
    var wait: Double = 30

    func run() throws {
        let (directory, registration) = try target.locate()
        try target.send("PUT", "/actions", json: #"{"action_type":"InstanceStop"}"#)
        guard wait > 0 else { return }
        let deadline = Date().addingTimeInterval(wait)
        while Date() < deadline {
            let entry = directory.entry(named: registration.name)
            if entry == nil || entry?.registration?.pid != registration.pid || !InstanceProcess.isAlive(pid: registration.pid, startedAt: registration.processStart) {
                return
            }
            usleep(50_000)
        }
        throw ValidationError("\(target.name): asked to stop, but process \(registration.pid) is still running after \(Int(wait)) s")
    }
}

struct PauseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Pause a running appliance's vCPUs by name.")

    @OptionGroup var target: InstanceTarget

    func run() throws { try target.send("PATCH", "/vm", json: #"{"state":"Paused"}"#) }
}

struct ResumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume a paused appliance by name.")

    @OptionGroup var target: InstanceTarget

    func run() throws { try target.send("PATCH", "/vm", json: #"{"state":"Resumed"}"#) }
}
