import Catalog
import Foundation
import TestSupport
import Testing
@testable import StreamClient

/// `kill -9` of a running `streamvm mirror` leaves no damaged object, and the next run finishes the
/// job fetching only what is missing.
@Suite struct MirrorCrashTests {
    /// The `streamvm` executable SwiftPM built beside this test bundle.
    static var streamvmPath: String? {
        guard let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        var directory = (executable as NSString).deletingLastPathComponent
        // The test binary may sit inside an .xctest bundle directory.
        if directory.hasSuffix(".xctest") || directory.contains(".xctest/") {
            directory = String(directory[..<directory.range(of: ".xctest")!.lowerBound])
            directory = (directory as NSString).deletingLastPathComponent
        }
        let candidate = "\(directory)/streamvm"
        return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil
    }

    @Test func killDuringMirrorLeavesNoCorruptFileAndTheNextRunResumes() async throws {
        let binary = try #require(Self.streamvmPath, "streamvm executable not found beside the test bundle; run `swift build` first")
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkSize: 16384, chunkCount: 60)
        let keyPath = directory.sub("trusted.pub")
        try fixture.key.publicKey.fileContents.write(toFile: keyPath, atomically: true, encoding: .utf8)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        // The first few chunks are served, every later one sends half its body and stalls: the kill
        // comes with transfers in progress and a known number of chunks complete, however slow the host.
        let servedBeforeStall = 5
        peer.inject(.throttle(bytesPerSecond: 1 << 30), times: servedBeforeStall) { $0.hasPrefix("/chunks/") }
        peer.inject(.stall(seconds: 30)) { $0.hasPrefix("/chunks/") }
        let mirrorRoot = directory.sub("mirror")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["mirror", peer.url, mirrorRoot, "--trust", keyPath, "--cache-dir", directory.sub("unused-cache")]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let chunkDirectory = "\(mirrorRoot)/chunks"
        // Polled on its own thread: a starved cooperative pool must not let the mirror finish first.
        try await offPool {
            for _ in 0..<3000 where CatalogDirectory.countFiles(under: chunkDirectory) < servedBeforeStall && process.isRunning {
                usleep(10_000)
            }
            // Give a write that may be under way a moment, so the kill can also land mid-write.
            usleep(50_000)
            kill(process.processIdentifier, SIGKILL)
        }
        try await offPool { process.waitUntilExit() }
        #expect(process.terminationReason == .uncaughtSignal)

        let destination = try CatalogDirectory(root: mirrorRoot)
        let distinct = Set(fixture.disk.chunks.compactMap { $0?.id }).count
        let survived = destination.objects(of: .chunk).count
        #expect(survived == servedBeforeStall)
        // catalog.json is written last, so a half-done mirror does not advertise anything.
        #expect(!destination.contains(.catalog))
        try MirrorCheck.assertEveryObjectVerifies(destination)

        peer.clearFaults()
        let before = peer.requestLog.count
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust)
        defer { harness.shutdown() }
        let report = try await CatalogMirror(client: harness.client, destination: destination, logger: ClientHarness.logger)
            .run(appliances: nil)
        #expect(report.chunksPresent == survived)
        #expect(report.chunksFetched == distinct - survived)
        let refetched = peer.requestLog[before...].filter { $0.hasPrefix("/chunks/") }
        #expect(refetched.count == distinct - survived)
        try MirrorCheck.assertComplete(mirror: destination, like: fixture)
        // The killed run's temp files were cleaned up.
        #expect(CatalogDirectory.countFiles(under: mirrorRoot, prefix: ".tmp-") == 0)
    }
}

/// `kill -9` of `streamvm fetch` filling the chunk cache leaves only whole, verified chunks, and
/// the next run fetches only what is missing and removes the killed run's temp files.
@Suite struct CachedFetchCrashTests {
    @Test func killDuringCachedFetchLeavesNoCorruptChunkAndTheNextRunResumes() async throws {
        let binary = try #require(MirrorCrashTests.streamvmPath, "streamvm executable not found beside the test bundle; run `swift build` first")
        let directory = try TemporaryDirectory()
        let fixture = try FixtureCatalog.make(root: directory.sub("catalog"), chunkSize: 16384, chunkCount: 60)
        let keyPath = directory.sub("trusted.pub")
        try fixture.key.publicKey.fileContents.write(toFile: keyPath, atomically: true, encoding: .utf8)
        let peer = try HostilePeer(root: fixture.root)
        defer { peer.stop() }
        let servedBeforeStall = 5
        peer.inject(.throttle(bytesPerSecond: 1 << 30), times: servedBeforeStall) { $0.hasPrefix("/chunks/") }
        peer.inject(.stall(seconds: 30)) { $0.hasPrefix("/chunks/") }
        let cacheRoot = directory.sub("cache")
        let out = directory.sub("out")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["fetch", "\(peer.url)/\(fixture.name)", out, "--trust", keyPath, "--cache-dir", cacheRoot]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try await offPool {
            for _ in 0..<3000 where CatalogDirectory.countFiles(under: "\(cacheRoot)/chunks") < servedBeforeStall && process.isRunning {
                usleep(10_000)
            }
            usleep(50_000)
            kill(process.processIdentifier, SIGKILL)
        }
        try await offPool { process.waitUntilExit() }
        #expect(process.terminationReason == .uncaughtSignal)
        // The artifact is renamed into place only when complete: nothing half-written under its name.
        #expect(!FileManager.default.fileExists(atPath: "\(out)/disk.img"))

        // Every cached chunk is whole and matches its name.
        let cache = try ChunkCache(root: cacheRoot, capacityBytes: 1 << 30, logger: ClientHarness.logger)
        let verification = cache.verifyAll()
        #expect(verification.checked == servedBeforeStall)
        #expect(verification.damagedRemoved == 0)

        peer.clearFaults()
        let harness = try ClientHarness(origins: [peer.url], trust: fixture.trust, cacheRoot: cacheRoot)
        defer { harness.shutdown() }
        let distinct = Set(fixture.disk.chunks.compactMap { $0?.id }).count
        let before = peer.requestLog.count
        let progress = ProgressRecorder()
        let report = try await ApplianceDownloader(loader: harness.loader, logger: ClientHarness.logger)
            .download(fixture.name, into: out, progress: progress.handler)
        #expect(report.chunksFetched == distinct - servedBeforeStall)
        #expect(peer.requestLog[before...].filter { $0.hasPrefix("/chunks/") }.count == distinct - servedBeforeStall)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(out)/disk.img")) == Data(fixture.image))
        // The progress bar's numbers end complete.
        let last = try #require(progress.last)
        #expect(last.total > 0)
        #expect(last.done == last.total)
        // The killed run's temp file (a sparse disk image) was removed.
        #expect(CatalogDirectory.countFiles(under: out, prefix: ".tmp-") == 0)
        // `cache gc` removes whatever temp files the killed writer left in the cache.
        _ = cache.collectGarbage()
        #expect(CatalogDirectory.countFiles(under: cacheRoot, prefix: ".tmp-") == 0)
    }
}

/// Keeps the latest (done, total) a progress handler saw.
final class ProgressRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var latest: (done: Int64, total: Int64)?
    var handler: ProgressHandler { { done, total in self.lock.withLock { self.latest = (done, total) } } }
    var last: (done: Int64, total: Int64)? { lock.withLock { latest } }
}

extension CatalogDirectory {
    /// Files (optionally only those whose name starts with `prefix`) anywhere below `path`.
    static func countFiles(under path: String, prefix: String = "") -> Int {
        guard let enumerator = FileManager.default.enumerator(atPath: path) else { return 0 }
        var count = 0
        while let item = enumerator.nextObject() as? String {
            let name = (item as NSString).lastPathComponent
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: "\(path)/\(item)", isDirectory: &isDirectory)
            if !isDirectory.boolValue, name.hasPrefix(prefix), prefix.isEmpty ? !name.hasPrefix(".tmp-") : true { count += 1 }
        }
        return count
    }
}
