import Catalog
import Logging

/// Re-verifies every object of the catalogue in the background, at a gentle rate, so that corruption
/// (bit rot, a bad disk, someone editing files) is found even in objects nobody has asked for lately.
public struct ObjectScrubber: Sendable {
    public struct Pace: Sendable {
        /// Bytes verified per second; the scrubber sleeps after each object to keep to it.
        public var bytesPerSecond: Int
        /// Rest between two full passes.
        public var restBetweenPasses: Duration

        public init(bytesPerSecond: Int = 32 << 20, restBetweenPasses: Duration = .seconds(3600)) {
            self.bytesPerSecond = bytesPerSecond
            self.restBetweenPasses = restBetweenPasses
        }
    }

    /// What one pass found.
    public struct PassReport: Sendable, Equatable {
        public var checked = 0
        public var corrupt: [CatalogObject] = []
    }

    let store: VerifiedObjectStore
    let pace: Pace
    let metrics: ServerMetrics
    let logger: Logger

    public init(store: VerifiedObjectStore, pace: Pace, metrics: ServerMetrics, logger: Logger) {
        self.store = store
        self.pace = pace
        self.metrics = metrics
        self.logger = logger
    }

    /// Scrubs until cancelled.
    public func run() async {
        while !Task.isCancelled {
            let report = await scrubOnce()
            logger.info("scrub pass finished", metadata: ["checked": "\(report.checked)", "corrupt": "\(report.corrupt.count)"])
            try? await Task.sleep(for: pace.restBetweenPasses)
        }
    }

    /// One pass over every object now in the catalogue.
    public func scrubOnce() async -> PassReport {
        var report = PassReport()
        let objects = [CatalogObject.catalog, .modelIndex] + CatalogObject.Kind.allCases.flatMap { store.directory.objects(of: $0) }
        for object in objects {
            if Task.isCancelled { break }
            let size = FileIdentity.of(path: store.directory.filePath(object))?.size ?? 0
            do {
                switch try await store.reverify(object) {
                case true?: report.checked += 1
                case false?: report.checked += 1; report.corrupt.append(object)
                case nil: break
                }
                metrics.recordScrubbed()
            } catch {
                logger.warning("scrub could not read an object", metadata: ["object": "\(object.path)", "error": "\(error)"])
            }
            if pace.bytesPerSecond > 0 {
                try? await Task.sleep(for: .nanoseconds(Int64(Double(size) / Double(pace.bytesPerSecond) * 1e9)))
            }
        }
        return report
    }
}
