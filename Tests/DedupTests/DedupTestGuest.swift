import Dedup
import Foundation
import Hypervisor
import Logging
import TestSupport

/// The flat test guest (appliances/testguest), built once per test process, and helpers to run its
/// `dedupfill` mode under a dedup engine.
enum DedupTestGuest {
    static let image: Result<[UInt8], any Error> = Result {
        let output = try TestGuestBuild.build(into: "testguest-dedup")
        return Array(try Data(contentsOf: URL(fileURLWithPath: output + "/testguest.bin")))
    }

    /// Starts `mode=dedupfill` with the engine's store as its page source and attaches it.
    static func start(engine: DedupEngine, mib: Int = 2, seed: Int, memoryMiB: Int = 32, rewrite: Int = 4) throws -> Machine {
        let store = try engine.makeStore(memorySize: memoryMiB << 20)
        var configuration = MachineConfiguration(memorySize: memoryMiB << 20, image: .flat(try image.get()),
                                                 commandLine: "mode=dedupfill mib=\(mib) seed=\(seed) rewrite=\(rewrite) spins=20000")
        configuration.pageSource = store
        let machine = try Machine(configuration: configuration, logger: Logger(label: "test-dedup-\(seed)"))
        try engine.attach(machine, store: store)
        try machine.start()
        return machine
    }

    /// Polls the console until `text` has appeared `count` times, the machine stopped, or `limit` passed.
    /// With `lineComplete`, also until the line of the last `text` has ended.
    static func waitForConsole(_ machine: Machine, _ text: String, count: Int = 1, limit: Duration = .seconds(120), lineComplete: Bool = false) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let parts = machine.console.output.components(separatedBy: text)
            if parts.count - 1 >= count && (!lineComplete || parts.last!.contains(where: \.isNewline)) { return true }
            if machine.state == .stopped { break }
            usleep(10_000)
        }
        return machine.console.output.components(separatedBy: text).count - 1 >= count
    }

    /// Asks the guest to check every byte of its region; returns how many pages held a wrong byte
    /// (nil when the guest did not answer).
    static func badPages(_ machine: Machine) -> Int? {
        let before = machine.console.output.components(separatedBy: "dedupfill verified").count - 1
        machine.serial.enqueueInput(Array("STREAMVM-VERIFY\n".utf8))
        guard waitForConsole(machine, "dedupfill verified", count: before + 1),
              waitForConsole(machine, "dedupfill verified", count: before + 1, lineComplete: true),
              let line = machine.console.output.split(whereSeparator: \.isNewline).last(where: { $0.contains("dedupfill verified") }),
              let field = line.split(separator: " ").drop(while: { $0 != "bad" }).dropFirst().first else { return nil }
        return Int(field.dropFirst(2), radix: 16)
    }

    /// State, stop reason and the console's end, for failure messages.
    static func describe(_ machine: Machine) -> String {
        let reason = machine.state == .stopped ? " (\(machine.waitUntilStopped(timeout: .zero)))" : ""
        return "\(machine.state)\(reason), console: \(machine.console.output.suffix(400))"
    }

    static func stop(_ machine: Machine) {
        machine.stop(.stopRequested)
        _ = machine.waitUntilStopped(timeout: .seconds(30))
    }
}
