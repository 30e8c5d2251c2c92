import Foundation

/// What one run of an appliance touched, in order: the client records it, uploads it to
/// `POST /v1/traces/<appliance>`, and the learner turns many of them into an `AccessModel`.
/// Versioned, so an old learner refuses a newer trace instead of misreading it.
public struct RunTrace: Codable, Sendable, Equatable {
    public static let currentFormat = 1
    /// A trace with more records than this is refused (one record per distinct chunk; 1M chunks of
    /// 64 KiB is 64 GiB touched, beyond any appliance run StreamVM is for).
    public static let maximumRecords = 1 << 20

    /// How the bytes of a first touch were obtained.
    public enum Outcome: String, Codable, Sendable, CaseIterable {
        /// All-zero chunk: nothing to fetch.
        case zero
        /// Already in the local cache before this run started fetching it.
        case cached
        /// Brought in by this run's prefetcher before the guest asked for it.
        case prefetchHit
        /// The guest waited for the network (including a prefetch still in flight).
        case demandMiss
        /// Served from the guest's own earlier writes.
        case overlay
    }

    public struct Record: Codable, Sendable, Equatable {
        public var location: ChunkLocation
        /// nil for an all-zero chunk.
        public var chunk: ChunkID?
        /// Byte offset in the artifact of the read that touched the chunk first.
        public var offset: Int
        /// Seconds since the run started (host monotonic clock); add to `RunTrace.started` for wall time.
        public var wallSeconds: Double
        /// Seconds of guest execution at the touch (nil when the VM had not started yet, e.g. buffering).
        public var guestSeconds: Double?
        public var outcome: Outcome
        /// How long the guest waited for this chunk.
        public var stallSeconds: Double

        enum CodingKeys: String, CodingKey {
            case location = "at", chunk, offset = "off", wallSeconds = "wall", guestSeconds = "guest", outcome = "how", stallSeconds = "stall"
        }

        public init(location: ChunkLocation, chunk: ChunkID?, offset: Int, wallSeconds: Double, guestSeconds: Double?,
                    outcome: Outcome, stallSeconds: Double) {
            self.location = location
            self.chunk = chunk
            self.offset = offset
            self.wallSeconds = wallSeconds
            self.guestSeconds = guestSeconds
            self.outcome = outcome
            self.stallSeconds = stallSeconds
        }

        /// The time the learner orders by: guest time when known (it excludes host stalls, so slow and
        /// fast links give the same order), wall time otherwise.
        public var orderSeconds: Double { guestSeconds ?? wallSeconds }
    }

    public var format: Int
    public var appliance: String
    public var version: String
    /// The manifest whose chunk indices the records use.
    public var manifest: Digest
    /// Prefetch mode of the run (none, workingset, vtube, full).
    public var prefetch: String
    /// The model the run prefetched with, if any.
    public var model: Digest?
    /// Wall-clock start of the run (encoded as seconds since 1970, which keeps sub-second precision).
    public var started: Date
    /// Seconds from start until the appliance printed its ready marker, if it did.
    public var readySeconds: Double?
    public var records: [Record]

    public init(appliance: String, version: String, manifest: Digest, prefetch: String, model: Digest?, started: Date,
                readySeconds: Double?, records: [Record]) {
        self.format = Self.currentFormat
        self.appliance = appliance
        self.version = version
        self.manifest = manifest
        self.prefetch = prefetch
        self.model = model
        self.started = started
        self.readySeconds = readySeconds
        self.records = records
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .secondsSince1970
        return try encoder.encode(self)
    }

    /// Parses and checks a trace from anywhere (an upload is hostile until checked).
    public static func decode(_ data: Data, file: String) throws -> RunTrace {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        let trace: RunTrace
        do { trace = try decoder.decode(RunTrace.self, from: data) } catch {
            throw CatalogError.malformed(file: file, problem: describe(error))
        }
        try trace.validate(file: file)
        return trace
    }

    public func validate(file: String) throws {
        guard format == Self.currentFormat else {
            throw CatalogError.malformed(file: file, problem: "trace format \(format) is not supported (this build reads \(Self.currentFormat))")
        }
        try ApplianceConfig.validateName(appliance, what: "appliance name", file: file)
        try ApplianceConfig.validateName(version, what: "version", file: file)
        guard records.count <= Self.maximumRecords else {
            throw CatalogError.malformed(file: file, problem: "\(records.count) records exceed \(Self.maximumRecords)")
        }
        func plausible(_ seconds: Double) -> Bool { seconds.isFinite && seconds >= 0 && seconds < 1e7 }
        if let readySeconds, !plausible(readySeconds) { throw CatalogError.malformed(file: file, problem: "readySeconds \(readySeconds)") }
        var seen = Set<ChunkLocation>()
        for record in records {
            guard plausible(record.wallSeconds), plausible(record.stallSeconds), record.guestSeconds.map(plausible) ?? true,
                  record.offset >= 0 else {
                throw CatalogError.malformed(file: file, problem: "record \(record.location) has impossible times or offset")
            }
            guard seen.insert(record.location).inserted else {
                throw CatalogError.malformed(file: file, problem: "\(record.location) is recorded twice (a trace lists first touches only)")
            }
        }
    }

    /// Whether every record names the chunk `manifest` has at that location (a trace of another
    /// version, or a forged one, does not).
    public func matches(_ manifest: Manifest) -> Bool {
        records.allSatisfy { record in
            do { return try record.location.ref(in: manifest)?.id == record.chunk } catch { return false }
        }
    }
}
