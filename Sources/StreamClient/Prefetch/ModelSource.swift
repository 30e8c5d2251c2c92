import Catalog
import Foundation
import Logging

/// Fetches and checks the access-order model the signed catalogue names for an appliance. A model is
/// an optimisation: when it is missing, unreachable, corrupt or learned for another version, boot goes
/// on without it (on demand plus readahead) and the reason is logged, never thrown.
public enum ModelSource {
    public static func load(client: CatalogClient, index: CatalogIndex, appliance: String, manifest: Manifest,
                            manifestDigest: Digest, logger: Logger) async -> AccessModel? {
        guard let digest = index.appliances[appliance]?.model else {
            logger.info("no access-order model published yet; streaming on demand with readahead", metadata: ["appliance": "\(appliance)"])
            return nil
        }
        do {
            let data = try await client.loadModel(digest)
            let model = try AccessModel.decode(data, expected: digest, manifest: manifest, manifestDigest: manifestDigest,
                                               file: CatalogObject.model(digest).path)
            logger.info("using access-order model", metadata: [
                "model": "\(digest.short)", "runs": "\(model.runs)", "clusters": "\(model.clusters.count)",
                "working_set_bytes": "\(model.workingSetBytes)",
            ])
            return model
        } catch {
            logger.warning("access-order model unusable; falling back to on-demand streaming with readahead",
                           metadata: ["model": "\(digest.short)", "error": "\(error)"])
            return nil
        }
    }
}
