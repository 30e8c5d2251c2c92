import Catalog
import Foundation

/// An appliance directory as the publisher finds it: `appliance.json` plus artifact files.
/// Everything is checked before a byte is written to the catalogue, so a bad directory leaves the
/// catalogue untouched.
public struct ApplianceDirectory: Sendable {

    public let path: String
    public let config: ApplianceConfig
    /// Artifacts present, with their sizes, in a fixed order (disk first). Each one is optional (an
    /// appliance may be kernel + initrd only, as `streamvm run` accepts), but there must be one.
    public let artifacts: [(role: ArtifactRole, path: String, size: Int)]

    public init(path: String) throws {
        self.path = path
        config = try ApplianceConfig.load(directory: path)
        var found: [(ArtifactRole, String, Int)] = []
        for role in ArtifactRole.allCases {
            let file = "\(path)/\(role.fileName)"
            var info = stat()
            guard stat(file, &info) == 0 else {
                if errno == ENOENT { continue }
                throw ServerError.unreadableArtifact(path: file, errno: errno)
            }
            guard (info.st_mode & S_IFMT) == S_IFREG else { throw ServerError.unreadableArtifact(path: file, errno: EISDIR) }
            guard access(file, R_OK) == 0 else { throw ServerError.unreadableArtifact(path: file, errno: errno) }
            guard info.st_size > 0 else { throw ServerError.emptyArtifact(path: file) }
            found.append((role, file, Int(info.st_size)))
        }
        guard !found.isEmpty else { throw ServerError.noArtifacts(path: path) }
        artifacts = found
    }
}
