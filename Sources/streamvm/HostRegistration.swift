import ArgumentParser
import ControlAPI
import Foundation

/// `--name` for `run` and `boot`: register the appliance in the host's runtime directory so
/// `streamvm ps|stop|pause|resume` find it. Registration serves the control API (at
/// `<runtime>/<name>.sock` unless `--api-socket` says where); a run with `--api-socket` and no
/// `--name` registers too, under the appliance's name (or name-2, …). A bare run registers nothing
/// and starts no API server, so it stays the minimal process the VMM footprint work measures.
struct RegistrationOptions: ParsableArguments {
    @Option(help: "Register under this name in the runtime directory (serves the control API there) so `streamvm ps|stop|pause|resume NAME` drive it.")
    var name: String?

    @OptionGroup var runtime: RuntimeDirectoryOption

    /// Where to serve the API and under which name to register, or nil for neither.
    func plan(apiSocket: String?, appliance: String, config: HostConfigFile) throws -> HostRegistration? {
        guard name != nil || apiSocket != nil else { return nil }
        let apiSocket = apiSocket.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }
        let directory = RuntimeDirectory(path: runtime.resolve(config).value)
        do {
            try directory.prepare()
            let chosen = try directory.chooseName(preferred: name, base: appliance)
            return HostRegistration(directory: directory, name: chosen, socket: apiSocket ?? directory.socketPath(chosen))
        } catch where name == nil {
            // Only --api-socket was asked for: serve it; the host view is a convenience here.
            FileHandle.standardError.write(Data("streamvm: not registered for `streamvm ps`: \(error)\n".utf8))
            return HostRegistration(directory: nil, name: appliance, socket: apiSocket!)
        }
    }
}

/// A planned registration: the name and socket, and the entry once written.
final class HostRegistration: @unchecked Sendable {
    let directory: RuntimeDirectory?
    let name: String
    let socket: String
    private var registered: RuntimeDirectory.Registered?

    init(directory: RuntimeDirectory?, name: String, socket: String) {
        self.directory = directory
        self.name = name
        self.socket = socket
    }

    /// Writes the entry; call once the API is serving at `socket`.
    func register(appliance: String, version: String, command: String) throws {
        guard let directory else { return }
        let pid = getpid()
        registered = try directory.register(InstanceRegistration(
            name: name, pid: pid, processStart: InstanceProcess.startTime(pid: pid) ?? 0, socket: socket,
            appliance: appliance, version: version, command: command, started: Date()))
    }

    /// Removes the entry (the API server removes its own socket when it shuts down).
    func unregister() {
        registered?.remove()
        registered = nil
    }
}
