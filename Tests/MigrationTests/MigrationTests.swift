import Foundation
import Logging
import TestSupport
import Testing
@testable import Hypervisor
@testable import Migration
import StreamClient

/// The flat test guest, built once per test process.
enum MigrationTestGuest {
    static let image: Result<[UInt8], any Error> = Result {
        let output = try TestGuestBuild.build(into: "testguest")
        return Array(try Data(contentsOf: URL(fileURLWithPath: output + "/testguest.bin")))
    }
}

/// Polls the console until `text` appeared `count` times (or `limit` passed).
func consoleShows(_ machine: Machine, _ text: String, count: Int = 1, limit: Duration = .seconds(90)) -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if machine.console.output.components(separatedBy: text).count - 1 >= count { return true }
        if machine.state == .stopped { return machine.console.output.components(separatedBy: text).count - 1 >= count }
        usleep(20_000)
    }
    return false
}

/// A running ticker guest (rewrites `mib` MiB round after round; on STREAMVM-RESUMED checks all of it).
func runningTicker(mib: Int = 8) throws -> Machine {
    let configuration = MachineConfiguration(memorySize: 64 << 20, image: .flat(try MigrationTestGuest.image.get()), commandLine: "mode=ticker mib=\(mib)")
    let machine = try Machine(configuration: configuration, logger: Logger(label: "test-migration-source"))
    try machine.start()
    guard consoleShows(machine, "ticker round ", count: 2) else {
        machine.stop(.stopRequested)
        throw MigrationError.notMigratable("the ticker made no progress: \(machine.console.output)")
    }
    return machine
}

/// The destination's machine: same RAM and vCPUs as the ticker, state and memory from the plan.
func destinationMachine(_ plan: RestorePlan) throws -> Machine {
    try Machine(configuration: MachineConfiguration(memorySize: 64 << 20, image: .flat([]), restore: plan), logger: Logger(label: "test-migration-destination"))
}

let testToken = "migration-test-token-0123456789"

/// Runs `body` on a thread of its own and returns a way to wait for its result.
final class Background<T: Sendable>: @unchecked Sendable {
    private var result: Result<T, any Error>?
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () throws -> T) {
        Thread { [self] in
            result = Result { try body() }
            done.signal()
        }.start()
    }

    func value(timeout: Duration = .seconds(180)) throws -> T {
        guard done.wait(timeout: .now() + .seconds(Int(timeout.components.seconds))) == .success else { throw MigrationError.incomplete("timed out") }
        return try result!.get()
    }
}

@Suite(.enabled(if: KVMSystem.isAvailable && PageFaultHandler.isAvailable, "/dev/kvm or userfaultfd is not available: migration tests skipped"),
       .timeLimit(.minutes(5)), .offCooperativePool)
struct MigrationTests {
    /// A running guest moves to another machine over loopback HTTP/2 in each mode, finds its memory
    /// intact there and goes on; the source's copy is freed and never resumed.
    @Test(arguments: MigrationMode.allCases)
    func aRunningGuestMigratesWithItsMemoryIntact(mode: MigrationMode) throws {
        let listener = try MigrationListener(options: MigrationListener.Options(host: "127.0.0.1", port: 0, token: testToken), logger: Logger(label: "test"))
        defer { listener.shutdown() }
        let arrival = Background { try listener.accept(timeout: .seconds(120), makeMachine: destinationMachine) }
        let source = try runningTicker()
        defer { source.stop(.stopRequested) }
        var request = MigrationRequest(destination: "http://127.0.0.1:\(listener.port)", mode: mode, token: testToken, pageServerHost: "127.0.0.1")
        request.completionTimeout = .seconds(120)
        let report = try MigrationSource.migrate(source, request, logger: Logger(label: "test"))
        let incoming = try arrival.value()
        let destination = incoming.machine
        defer { destination.stop(.stopRequested) }

        #expect(consoleShows(destination, "memory intact"), "destination console: \(destination.console.output)")
        let roundsThere = destination.console.output.components(separatedBy: "ticker round ").count - 1
        #expect(consoleShows(destination, "ticker round ", count: roundsThere + 2), "the guest did not go on: \(destination.console.output)")
        #expect(!destination.console.output.contains("DAMAGED") && !destination.console.output.contains("FAIL"))
        #expect(incoming.waitUntilComplete(timeout: .seconds(60)))

        // Every data page crossed once (a batch fetched twice would show as more bytes).
        #expect(report.mode == mode)
        #expect(report.dataPages > 8 * 256, "the ticker's 8 MiB are data pages")
        #expect(report.pageBytesSent == report.dataPages * GuestMemory.pageSize)
        #expect(report.pagesInstalled == report.dataPages)
        #expect(report.switchSeconds <= report.completeSeconds && report.completeSeconds <= report.sourceFreedSeconds)
        let statistics = incoming.statistics
        #expect(statistics.bytesReceived == report.pageBytesSent)
        if mode == .stopAndCopy {
            #expect(statistics.pagesOnDemand == 0, "stop-and-copy starts the guest with every page present")
        }
        // The source stays paused, its memory given back (reads as zeros now), and it is never resumed.
        #expect(source.state == .paused)
        #expect(try source.memory.read(at: 8 << 20, length: 64) == [UInt8](repeating: 0, count: 64))
        let sourceRounds = source.console.output.components(separatedBy: "ticker round ").count
        usleep(300_000)
        #expect(source.console.output.components(separatedBy: "ticker round ").count == sourceRounds)
    }

    /// A destination that cannot take the machine (here: the wrong RAM size) answers with why, and
    /// the source runs on as if nothing happened.
    @Test func aRefusingDestinationLeavesTheSourceRunning() throws {
        let listener = try MigrationListener(options: MigrationListener.Options(host: "127.0.0.1", port: 0, token: testToken), logger: Logger(label: "test"))
        defer { listener.shutdown() }
        let arrival = Background {
            try listener.accept(timeout: .seconds(120)) { plan in
                try Machine(configuration: MachineConfiguration(memorySize: 32 << 20, image: .flat([]), restore: plan), logger: Logger(label: "test"))
            }
        }
        let source = try runningTicker(mib: 2)
        defer { source.stop(.stopRequested) }
        let request = MigrationRequest(destination: "http://127.0.0.1:\(listener.port)", mode: .postCopy, token: testToken, pageServerHost: "127.0.0.1")
        #expect { try MigrationSource.migrate(source, request, logger: Logger(label: "test")) } throws: {
            "\($0)".contains("did not take the machine") && "\($0)".contains("32 MiB")
        }
        #expect(throws: (any Error).self) { try arrival.value() }
        #expect(source.state == .running)
        let rounds = source.console.output.components(separatedBy: "ticker round ").count - 1
        #expect(consoleShows(source, "ticker round ", count: rounds + 2), "the source did not run on: \(source.console.output)")
    }

    /// A source without the listener's token is turned away (401) and keeps its machine.
    @Test func aSourceWithoutTheTokenIsRefused() throws {
        let listener = try MigrationListener(options: MigrationListener.Options(host: "127.0.0.1", port: 0, token: testToken), logger: Logger(label: "test"))
        defer { listener.shutdown() }
        let source = try runningTicker(mib: 2)
        defer { source.stop(.stopRequested) }
        let request = MigrationRequest(destination: "http://127.0.0.1:\(listener.port)", mode: .postCopy, token: "not-the-token-of-this-listener", pageServerHost: "127.0.0.1")
        #expect { try MigrationSource.migrate(source, request, logger: Logger(label: "test")) } throws: { "\($0)".contains("HTTP 401") }
        #expect(source.state == .running)
    }

    /// The source's page server goes away after the switch: the destination's guest, which needs
    /// pages it does not have, is stopped with a clear error and never runs on a missing page.
    @Test func theSourceDyingMidPostCopyStopsTheDestination() throws {
        var options = MigrationListener.Options(host: "127.0.0.1", port: 0, token: testToken)
        options.backgroundStreams = 0 // only the guest's faults fetch, so pages are still missing
        options.linkLossToleranceSeconds = 1
        let listener = try MigrationListener(options: options, logger: Logger(label: "test"))
        defer { listener.shutdown() }
        let arrival = Background { try listener.accept(timeout: .seconds(120), makeMachine: destinationMachine) }

        // Play the source by hand so its page server can die right after the switch.
        let source = try runningTicker()
        defer { source.stop(.stopRequested) }
        try source.pause()
        let state = try source.captureState()
        let pages = try SourcePageServer.start(memory: source.memory, batches: PageBatches(image: state.memory, pagesPerBatch: 16),
                                               host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let offer = try MigrationOffer(mode: .postCopy, pagesURL: pages.pagesURL, pagesPerBatch: 16, state: state).encoded()
        let answer = try HTTPPost(url: "http://127.0.0.1:\(listener.port)\(MigrationListener.offerPath)", body: offer, bearerToken: testToken,
                                  mode: .h2cPriorKnowledge, timeoutSeconds: 60).perform()
        #expect(answer.status == 200, "\(answer.summary)")
        pages.shutdown()

        let destination = try arrival.value().machine
        let reason = destination.waitUntilStopped(timeout: .seconds(60))
        guard case .failure(let problem) = reason else {
            Issue.record("the destination went on without its source: \(reason), console: \(destination.console.output)")
            return
        }
        #expect(problem.contains("guest memory unavailable") && problem.contains("migration source"), "\(problem)")
        #expect(!destination.console.output.contains("memory intact"))
        #expect(!destination.console.output.contains("DAMAGED"))
    }
}

/// Without KVM: the checks a destination makes on what a source sends.
struct MigrationInputTests {
    func state(pages: Int = 16) -> MachineSnapshot {
        let digests = Data(count: pages * 8)
        return MachineSnapshot(format: MachineSnapshot.formatName, version: MachineSnapshot.currentVersion, memorySize: pages * GuestMemory.pageSize,
                               vcpuCount: 1, vcpus: [], platform: PlatformState(irqchips: [], pit: Data(), clock: Data()), devices: [],
                               memory: .init(size: pages * GuestMemory.pageSize, pageSize: GuestMemory.pageSize, dataPages: 0, pageDigests: digests))
    }

    @Test func offersAreCheckedFieldByField() throws {
        func problem(_ mutate: (inout [String: Any]) -> Void) throws -> String {
            var object = try JSONSerialization.jsonObject(with: MigrationOffer(mode: .postCopy, pagesURL: "http://127.0.0.1:1/v1/migration/t", pagesPerBatch: 16,
                                                                               state: state()).encoded()) as! [String: Any]
            mutate(&object)
            do {
                _ = try MigrationOffer.decode(try JSONSerialization.data(withJSONObject: object))
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(try problem { $0["format"] = "qemu" }.contains("offer format is \"qemu\""))
        #expect(try problem { $0["version"] = 9 }.contains("offer version 9"))
        #expect(try problem { $0["pagesPerBatch"] = 0 }.contains("pagesPerBatch is 0"))
        #expect(try problem { $0["pagesPerBatch"] = 100_000 }.contains("pagesPerBatch is 100000"))
        #expect(try problem { $0["pagesURL"] = "file:///etc/passwd" }.contains("pagesURL"))
        #expect(try problem { $0["pagesURL"] = "http://h/x?y=1" }.contains("pagesURL"))
        #expect(try problem { $0["mode"] = "teleport" }.contains("not a StreamVM migration offer"))
        // The state is validated too (here: no vCPU states for one vCPU).
        #expect(try problem { _ in }.contains("machine state"))
        #expect { try MigrationOffer.decode(Data("{".utf8)) } throws: { "\($0)".contains("not a StreamVM migration offer") }
    }

    /// Bytes that do not match the digest the state gave a page are never handed to the guest.
    @Test func aPageThatDoesNotMatchItsDigestIsRefused() throws {
        let memory = try GuestMemory(size: 64 * GuestMemory.pageSize)
        for page in 0..<64 where page % 3 == 0 {
            try memory.write([UInt8](repeating: UInt8(page + 1), count: GuestMemory.pageSize), at: UInt64(page * GuestMemory.pageSize))
        }
        let image = try MemoryImageWriter.describe(memory)
        #expect(image.dataPages == 22)
        let batches = PageBatches(image: image, pagesPerBatch: 16)
        #expect(batches.dataPages(ofBatch: 1) == [18, 21, 24, 27, 30])
        let server = try SourcePageServer.start(memory: memory, batches: batches, host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { server.shutdown() }
        let fetcher = try Fetcher(logger: Logger(label: "test"))
        defer { fetcher.shutdown() }
        let source = RemotePageSource(batches: batches, pagesURL: server.pagesURL, fetcher: fetcher, linkLossToleranceSeconds: 2)
        var buffer = [UInt8](repeating: 0, count: GuestMemory.pageSize)
        #expect(try buffer.withUnsafeMutableBytes { try source.readPage(3, into: $0) } == .data)
        #expect(buffer == [UInt8](repeating: 4, count: GuestMemory.pageSize))
        #expect(try buffer.withUnsafeMutableBytes { try source.readPage(4, into: $0) } == .zero)
        // The source's memory changes after its digests were taken (a bug, or a hostile source).
        try memory.write([0xee], at: UInt64(39 * GuestMemory.pageSize + 7))
        #expect { try buffer.withUnsafeMutableBytes { try source.readPage(39, into: $0) } } throws: { "\($0)".contains("is not the page's") }
        // A wrong page token finds nothing.
        let stranger = RemotePageSource(batches: batches, pagesURL: server.pagesURL.dropLast(4) + "0000", fetcher: fetcher, linkLossToleranceSeconds: 0.5)
        #expect { try buffer.withUnsafeMutableBytes { try stranger.readPage(0, into: $0) } } throws: { "\($0)".contains("404") }
    }
}
