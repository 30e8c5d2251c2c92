import Foundation
import Hypervisor

/// What a source sends a destination's listener (`POST /v1/migrations`): the paused machine's state
/// (vCPUs, platform, devices, and each page's digest) and where its pages are. Hostile until
/// checked: `decode` refuses anything malformed with the field at fault before a machine is built.
public struct MigrationOffer: Codable, Sendable {
    public static let formatName = "streamvm-migration"
    public static let currentVersion = 1
    /// An offer larger than this is refused before parsing (the digest table of a 64 GiB guest,
    /// base64, is about 170 MiB).
    public static let maximumBytes = 256 << 20
    /// Bounds of `pagesPerBatch`: one page to 1 MiB of pages per request.
    static let batchSizes = 1...256

    public var format: String
    public var version: Int
    public var mode: MigrationMode
    /// The source's page server for this migration, ending in the page token: batch `b` is
    /// `GET <pagesURL>/pages/<b>`, and the destination says it holds every page with
    /// `POST <pagesURL>/complete`.
    public var pagesURL: String
    /// Pages per batch (the unit of one page request), batches aligned to multiples of it.
    public var pagesPerBatch: Int
    public var state: MachineSnapshot

    public init(mode: MigrationMode, pagesURL: String, pagesPerBatch: Int, state: MachineSnapshot) {
        format = Self.formatName
        version = Self.currentVersion
        self.mode = mode
        self.pagesURL = pagesURL
        self.pagesPerBatch = pagesPerBatch
        self.state = state
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }

    /// Decodes and checks an offer; a failure names the field.
    public static func decode(_ data: Data) throws -> MigrationOffer {
        guard data.count <= maximumBytes else { throw MigrationError.badRequest("the offer has \(data.count) bytes, more than \(maximumBytes)") }
        let offer: MigrationOffer
        do {
            offer = try JSONDecoder().decode(MigrationOffer.self, from: data)
        } catch {
            throw MigrationError.badRequest("the offer is not a StreamVM migration offer: \(error)")
        }
        guard offer.format == formatName else { throw MigrationError.badRequest("offer format is \"\(offer.format)\", expected \"\(formatName)\"") }
        guard offer.version == currentVersion else {
            throw MigrationError.badRequest("offer version \(offer.version); this streamvm takes version \(currentVersion) (run the same streamvm on both hosts)")
        }
        guard batchSizes.contains(offer.pagesPerBatch) else {
            throw MigrationError.badRequest("pagesPerBatch is \(offer.pagesPerBatch), expected \(batchSizes.lowerBound)...\(batchSizes.upperBound)")
        }
        guard let url = URL(string: offer.pagesURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil, url.query == nil,
              !offer.pagesURL.hasSuffix("/") else {
            throw MigrationError.badRequest("pagesURL \"\(offer.pagesURL.prefix(200))\" is not an http(s) URL without a query or trailing slash")
        }
        do {
            try offer.state.validate()
        } catch {
            throw MigrationError.badRequest("the offer's machine state: \(error)")
        }
        return offer
    }

    /// Number of batches covering guest RAM.
    public var batchCount: Int { (state.memory.pageCount + pagesPerBatch - 1) / pagesPerBatch }
}
