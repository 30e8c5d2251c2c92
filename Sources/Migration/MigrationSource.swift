import Foundation
import Hypervisor
import Logging
import StreamClient

/// Where and how to migrate a machine (the source's side of `streamvm migrate`).
public struct MigrationRequest: Sendable {
    /// The destination's listener, `http://host:port` (its `run --incoming`).
    public var destination: String
    public var mode: MigrationMode
    /// The listener's token (from the token file both hosts hold).
    public var token: String
    /// Address the page server binds and the destination connects to (this host as the destination
    /// sees it); port 0 picks a free port.
    public var pageServerHost: String
    public var pageServerPort: Int = 0
    /// Pages per page request: 16 pages are 64 KiB, the catalogue's chunk size.
    public var pagesPerBatch: Int = 16
    /// How long the destination may take to build and start the machine (stop-and-copy: and to
    /// fetch all of its memory first) before the source gives up and resumes here.
    public var switchTimeoutSeconds: Int = 600
    /// How long the destination may take, after it runs the machine, to fetch every page.
    public var completionTimeout: Duration = .seconds(3600)

    public init(destination: String, mode: MigrationMode, token: String, pageServerHost: String) {
        self.destination = destination
        self.mode = mode
        self.token = token
        self.pageServerHost = pageServerHost
    }
}

/// What a migration cost, measured on the source. Times are seconds from the moment the source
/// began to pause the machine.
public struct MigrationReport: Codable, Sendable, Equatable {
    public var mode: MigrationMode
    /// Until the destination answered that the machine runs there (the switch).
    public var switchSeconds: Double
    /// Until the destination said it holds every page.
    public var completeSeconds: Double
    /// Until the source had given back the machine's memory (after `completeSeconds`).
    public var sourceFreedSeconds: Double
    /// Bytes of guest memory the source sent (page bodies only) and the offer's size.
    public var pageBytesSent: Int
    public var offerBytes: Int
    public var batchesServed: Int
    /// Guest RAM and its data pages (not all zeros) when paused.
    public var memoryBytes: Int
    public var dataPages: Int
    /// Pages the destination installed in all, and those a guest fault asked for first.
    public var pagesInstalled: Int
    public var pagesOnDemand: Int
}

/// The source's side: pause, send the state, serve the pages until the destination holds them all,
/// then give the memory back. The machine is never resumed here once the destination has taken it
/// (one guest must not run twice); it is resumed when the destination refuses or cannot be reached.
public enum MigrationSource {
    /// Migrates `machine` (running or paused) as `request` says; blocks until the destination holds
    /// every page. Call off the Swift concurrency pool. On return the machine is paused with its
    /// memory released: stop it.
    public static func migrate(_ machine: Machine, _ request: MigrationRequest, logger: Logger) throws -> MigrationReport {
        let start = ContinuousClock.now
        func seconds() -> Double { let elapsed = ContinuousClock.now - start; return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18 }
        let wasRunning: Bool
        switch machine.state {
        case .running: wasRunning = true
        case .paused: wasRunning = false
        case let state: throw MigrationError.notMigratable("the machine is \(state.rawValue.lowercased())")
        }
        if wasRunning { try machine.pause() }
        func resumeHere() { if wasRunning { try? machine.resume() } }

        let state: MachineSnapshot
        let pages: SourcePageServer
        let offerBody: Data
        do {
            state = try machine.captureState()
            let batches = PageBatches(image: state.memory, pagesPerBatch: request.pagesPerBatch)
            pages = try SourcePageServer.start(memory: machine.memory, batches: batches, host: request.pageServerHost, port: request.pageServerPort, logger: logger)
            offerBody = try MigrationOffer(mode: request.mode, pagesURL: pages.pagesURL, pagesPerBatch: request.pagesPerBatch, state: state).encoded()
        } catch {
            resumeHere()
            throw error
        }
        let destination = request.destination.hasSuffix("/") ? String(request.destination.dropLast()) : request.destination
        let post = HTTPPost(url: destination + MigrationListener.offerPath, body: offerBody, bearerToken: request.token,
                            mode: .h2cPriorKnowledge, timeoutSeconds: request.switchTimeoutSeconds)
        do {
            let answer = try post.perform()
            guard answer.status == 200 else { throw MigrationError.destinationRefused(url: destination, problem: "HTTP \(answer.status): \(answer.summary)") }
        } catch {
            // The destination may have claimed the machine and lost only its answer: then it runs
            // there, and resuming here would run the guest twice.
            guard pages.abort() else {
                logger.warning("the destination claimed the machine but its answer did not arrive; serving its pages", metadata: ["problem": "\(error)"])
                return try finish(pages: pages, state: state, offerBytes: offerBody.count, switchSeconds: seconds(), request: request, machine: machine, seconds: seconds)
            }
            pages.shutdown()
            resumeHere()
            if let error = error as? MigrationError { throw error }
            throw MigrationError.destinationRefused(url: destination, problem: "\(error)")
        }
        let switchSeconds = seconds()
        logger.info("the machine runs at the destination", metadata: ["destination": "\(destination)", "mode": "\(request.mode.rawValue)", "switch_s": "\(switchSeconds)"])
        return try finish(pages: pages, state: state, offerBytes: offerBody.count, switchSeconds: switchSeconds, request: request, machine: machine, seconds: seconds)
    }

    /// After the switch: serves pages until the destination holds them all, then frees the memory.
    private static func finish(pages: SourcePageServer, state: MachineSnapshot, offerBytes: Int, switchSeconds: Double, request: MigrationRequest,
                               machine: Machine, seconds: () -> Double) throws -> MigrationReport {
        guard let completion = pages.waitForCompletion(timeout: request.completionTimeout) else {
            pages.shutdown()
            throw MigrationError.incomplete("the destination runs the machine but did not confirm every page within \(request.completionTimeout); its memory stays here, paused")
        }
        let completeSeconds = seconds()
        let served = pages.served
        pages.shutdown()
        try machine.discardPages(0..<machine.memory.pageCount)
        return MigrationReport(mode: request.mode, switchSeconds: switchSeconds, completeSeconds: completeSeconds, sourceFreedSeconds: seconds(),
                               pageBytesSent: served.bytesServed, offerBytes: offerBytes, batchesServed: served.batchesServed,
                               memoryBytes: state.memorySize, dataPages: state.memory.dataPages,
                               pagesInstalled: completion.pagesInstalled, pagesOnDemand: completion.pagesOnDemand)
    }
}
