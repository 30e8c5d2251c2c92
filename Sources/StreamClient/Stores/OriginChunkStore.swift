import Catalog

/// The origins, as the last store the router asks: `CatalogClient.loadChunk` fetches the frame
/// (retrying, then failing over through the `OriginPool`), decompresses it and checks the result
/// against the chunk's SHA-256, which the signed catalogue vouches for through the manifest. Bytes
/// that fail the check are never returned: the fetch counts as failed and is retried elsewhere.
public final class OriginChunkStore: RemoteChunkStore {
    public let client: CatalogClient

    public init(client: CatalogClient) { self.client = client }

    public func fetch(_ request: ChunkRequest, ticket: FetchTicket) async throws -> [UInt8] {
        try await client.loadChunk(request.ref, length: request.length, dictionary: request.dictionary, ticket: ticket).bytes
    }
}
