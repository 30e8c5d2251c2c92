import ArgumentParser
import Catalog
import Foundation

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make an Ed25519 key pair for signing catalogues (<name>.key and <name>.pub).")

    @Argument(help: "Path prefix of the key files.")
    var name: String

    @Flag(help: "Replace existing key files.")
    var force = false

    func run() throws {
        let privatePath = "\(name).key", publicPath = "\(name).pub"
        if !force, FileManager.default.fileExists(atPath: privatePath) {
            throw ValidationError("\(privatePath) exists; pass --force to replace it")
        }
        let key = SigningKey()
        try AtomicFile.write(Data(key.fileContents.utf8), to: privatePath, mode: 0o600)
        try AtomicFile.write(Data(key.publicKey.fileContents.utf8), to: publicPath)
        print("wrote \(privatePath) (keep secret) and \(publicPath) (give to clients: --trust \(publicPath))")
    }
}
