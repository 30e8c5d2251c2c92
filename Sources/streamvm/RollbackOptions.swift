import ArgumentParser
import Foundation
import StreamClient

/// Options of the commands that accept a catalogue for use on this host (`boot`, `fetch`): where the
/// highest catalogue generation seen per signing key is remembered, and the operator's override.
struct RollbackOptions: ParsableArguments {
    @Option(help: "Directory for this host's client state: the newest catalogue generation seen per signing key (rollback protection).")
    var stateDir: String = RollbackOptions.defaultStateDirectory

    @Flag(help: "Accept a catalogue older than one this host already accepted from the same signing key (the refusal is logged instead).")
    var allowRollback = false

    /// XDG base directories: state that should survive a cache wipe belongs in XDG_STATE_HOME.
    static var defaultStateDirectory: String {
        if let xdg = ProcessInfo.processInfo.environment["XDG_STATE_HOME"], !xdg.isEmpty { return "\(xdg)/streamvm" }
        return "\(NSHomeDirectory())/.local/state/streamvm"
    }

    var protection: RollbackProtection {
        RollbackProtection(seen: SeenGenerations(directory: stateDir), allowRollback: allowRollback)
    }
}
