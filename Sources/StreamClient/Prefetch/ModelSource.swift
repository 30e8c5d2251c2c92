import Catalog
import Foundation
import Logging

/// Fetches and checks the access-order model for an appliance: the one models.json names when the
/// catalogue delegates models to a key (models.json must be signed by exactly that key), else the one
/// the signed catalogue itself names. A model is an optimisation: when it is missing, unreachable,
/// wrongly signed, corrupt or learned for another version, boot goes on without it (on demand plus
/// readahead) and the reason is logged, never thrown. Even a validly signed but hostile model only
/// changes what is fetched when: every chunk is still checked against the manifest.
public enum ModelSource {
    public static func load(client: CatalogClient, index: CatalogIndex, appliance: String, manifest: Manifest,
                            manifestDigest: Digest, logger: Logger) async -> AccessModel? {
        var named = index.appliances[appliance]?.model
        if let modelKey = index.modelSigningKey {
            do {
                if let delegated = try await client.loadModelIndex(signedBy: modelKey).index.index.models[appliance] { named = delegated }
            } catch ClientError.notPublished {
                logger.info("no models.json published yet", metadata: ["appliance": "\(appliance)"])
            } catch {
                logger.warning("models.json unusable; using the model the catalogue names, if any",
                               metadata: ["appliance": "\(appliance)", "error": "\(error)"])
            }
        }
        guard let digest = named else {
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
