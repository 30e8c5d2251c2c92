import Catalog
import Foundation
import Testing
@testable import StreamServer

@Suite struct PathAttackTests {
    static let secret = "TOP-SECRET-OUTSIDE-THE-CATALOGUE"

    /// Every hostile target is answered 400 or 404 and no byte from outside the catalogue is sent,
    /// including through a symlink planted inside the catalogue.
    @Test func hostileTargetsNeverLeaveTheCatalogue() async throws {
        let catalogue = try TestCatalogue()
        try Self.secret.write(toFile: catalogue.base + "/secret.txt", atomically: true, encoding: .utf8)
        let planted = CatalogObject.chunk(Digest.of(Data(Self.secret.utf8)))
        try FileManager.default.createDirectory(atPath: (catalogue.path(planted) as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: catalogue.path(planted), withDestinationPath: catalogue.base + "/secret.txt")
        let server = try await RunningServer.start(catalogue: catalogue)
        let chunk = catalogue.chunks[0].object.path
        let targets = [
            "/../secret.txt", "/chunks/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
            "/chunks%2f..%2f..%2fsecret.txt", "/..%2fsecret.txt", "//secret.txt", "/./catalog.json",
            "/\(chunk)/../../../secret.txt", "/\(chunk)?x", "/\(chunk.uppercased())", "/catalog.json/",
            "/chunks\\..\\..\\secret.txt", "/" + String(repeating: "a/", count: 100), "/secret.txt",
            "/" + planted.path, "/chunks/zz/" + String(repeating: "zz", count: 32) + ".zst",
            "/\(catalogue.base)/secret.txt", "/etc/passwd", "/proc/self/environ", "/v1/traces/",
        ]
        for target in targets {
            // A raw socket, so the target goes out exactly as written and every answered byte is seen.
            let answer = String(decoding: try await rawExchange(port: server.port, "GET \(target) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), as: UTF8.self)
            let statusLine = answer.split(separator: "\r\n").first.map(String.init) ?? ""
            #expect(statusLine.hasPrefix("HTTP/1.1 400") || statusLine.hasPrefix("HTTP/1.1 404"), "\(target) answered '\(statusLine)'")
            #expect(!answer.contains(Self.secret), "\(target) leaked the secret")
            #expect(!answer.contains("root:"), "\(target) leaked /etc/passwd")
        }
        await server.stop()
        // Remove the planted link first: the temporary tree's recursive removal would not clean up after it.
        try FileManager.default.removeItem(atPath: catalogue.path(planted))
    }
}
