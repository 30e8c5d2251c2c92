import Catalog
import Foundation

/// An appliance directory as the publisher finds it: `appliance.json` plus artifact files.
/// Everything is checked before a byte is written to the catalogue, so a bad directory leaves the
/// catalogue untouched.
public struct ApplianceDirectory: Sendable {
    public static let configFileName = "appliance.json"
    /// appliance.json is a few hundred bytes; anything over this is not one.
    static let maximumConfigBytes = 1 << 20

    public let path: String
    public let config: ApplianceConfig
    /// Artifacts present, with their sizes, in a fixed order (disk first). Each one is optional (an
    /// appliance may be kernel + initrd only, as `streamvm run` accepts), but there must be one.
    public let artifacts: [(role: ArtifactRole, path: String, size: Int)]

    public init(path: String) throws {
        self.path = path
        let configPath = "\(path)/\(Self.configFileName)"
        let data = try Self.readSmallFile(configPath)
        do {
            config = try JSONDecoder().decode(ApplianceConfig.self, from: data)
        } catch {
            throw ServerError.invalidApplianceConfig(path: configPath, problem: "\(error)")
        }
        do { try config.validate(file: configPath) } catch let error as CatalogError {
            throw ServerError.invalidApplianceConfig(path: configPath, problem: error.description)
        }
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

    static func readSmallFile(_ path: String) throws -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw ServerError.missingArtifact(path: path) }
            throw ServerError.unreadableArtifact(path: path, errno: errno)
        }
        defer { close(fd) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw ServerError.unreadableArtifact(path: path, errno: errno) }
            if n == 0 { break }
            data.append(contentsOf: buffer[0..<n])
            guard data.count <= maximumConfigBytes else {
                throw ServerError.invalidApplianceConfig(path: path, problem: "larger than \(maximumConfigBytes) bytes")
            }
        }
        return data
    }
}
