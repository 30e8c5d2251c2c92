import ArgumentParser
import Catalog
import Foundation
import HostNetwork
import Hypervisor
import Logging

/// `streamvm snapshot --at-ready <appliance-dir>`: boots the appliance, pauses it on the vCPU that
/// prints the ready marker, and writes memory.img + vmstate.json next to its artifacts, so
/// `streamvm publish` chunks them like any other artifact and `streamvm run` resumes from them.
struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Boot an appliance to its ready marker and save memory.img and vmstate.json beside it.",
        discussion: "The disk.img as left by this boot belongs with the snapshot: publish the directory afterwards.")

    @Argument(help: "Appliance directory holding appliance.json and its artifacts.")
    var appliance: String

    @Flag(help: "Pause when the guest prints its ready marker (the only point supported).")
    var atReady = false

    @Option(help: "Give up if the guest is not ready after this many seconds.")
    var timeout: Double = 300

    @Flag(help: "Log VMM diagnostics to stderr.")
    var verbose = false

    /// Kernel command-line argument for a boot that will be snapshotted at the ready marker.
    static let snapshotKernelArgument = "streamvm.snapshot=1"

    func run() throws {
        guard atReady else { throw ValidationError("say when to pause: --at-ready") }
        let setup = try ApplianceSetup(directory: appliance)
        var logger = Logger(label: "streamvm.snapshot")
        logger.logLevel = verbose ? .debug : .warning
        var configuration = setup.machineConfiguration(pauseAtReady: true)
        // The appliance's interfaces, in order: a resume attaches the same devices to restore their state.
        configuration.devices = try ApplianceNetwork.devices(for: setup.config, file: setup.configFile, backends: HostNetworkBackends(logger: logger))
        // Tells a Linux appliance's init it will be snapshotted at the marker: it then waits for the
        // resume line after printing it (docs/snapshot.md, "Readiness after a resume").
        if case .linux? = configuration.image { configuration.commandLine += " " + Self.snapshotKernelArgument }
        let machine = try Machine(configuration: configuration, logger: logger)
        let reason = machine.run(timeout: .milliseconds(Int(timeout * 1000)))
        guard reason == .stopRequested, machine.console.isReady else {
            throw ValidationError("the guest did not reach \"\(setup.config.readyMarker)\": \(reason)")
        }
        let snapshot = try machine.saveSnapshot(to: appliance)
        print("snapshot: \(MachineSnapshot.memoryFileName) (\(snapshot.memory.dataPages) of \(snapshot.memory.pageCount) pages hold data) and \(MachineSnapshot.stateFileName) written to \(appliance)")
    }
}

/// Reads an appliance directory into a machine configuration (shared by `snapshot` and `bench uffd`).
struct ApplianceSetup {
    let config: ApplianceConfig
    let directory: URL
    let image: BootImage
    let disks: [any BlockBackend]

    /// appliance.json's path, for errors that name a field of it.
    var configFile: String { directory.appendingPathComponent(ApplianceConfig.fileName).path }

    init(directory path: String) throws {
        directory = URL(fileURLWithPath: path)
        config = try ApplianceConfig.load(directory: path)
        let directory = self.directory
        func artifact(_ role: ArtifactRole) -> String? {
            let file = directory.appendingPathComponent(role.fileName).path
            return FileManager.default.fileExists(atPath: file) ? file : nil
        }
        guard let kernelPath = artifact(.kernel) else { throw ValidationError("\(path) has no kernel") }
        let kernel = Array(try Data(contentsOf: URL(fileURLWithPath: kernelPath)))
        if config.kernelFormat == .flat {
            image = .flat(kernel)
        } else {
            image = .linux(kernel: kernel, initrd: try artifact(.initrd).map { Array(try Data(contentsOf: URL(fileURLWithPath: $0))) })
        }
        disks = try artifact(.disk).map { [try RawFileBackend(path: $0, readOnly: false)] } ?? []
    }

    func machineConfiguration(pauseAtReady: Bool = false, restore: RestorePlan? = nil) -> MachineConfiguration {
        MachineConfiguration(memorySize: config.memoryMiB << 20, vcpuCount: config.vcpus, image: image,
                             commandLine: ApplianceNetwork.commandLine(config.kernelCommandLine ?? "", interfaces: config.interfaces), disks: disks, readyMarker: config.readyMarker,
                             restore: restore, pauseAtReady: pauseAtReady)
    }
}
