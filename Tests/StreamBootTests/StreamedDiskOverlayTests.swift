import Catalog
import Foundation
import Hypervisor
import StreamBoot
import StreamClient
import TestSupport
import Testing

/// Stream-boot's disk: the one `CopyOnWriteOverlay` (Hypervisor) over the streamed, read-only
/// `LazyImage` (through `LazyBlockBackend`), as `StreamBootSession` builds it. Needs no KVM.
@Suite struct StreamedDiskOverlayTests {
    @Test func writesOverTheStreamedDiskReadBackSurviveReopeningAndLeaveThePublishedImageAlone() async throws {
        let fixture = try StreamBootFixture(name: "overlay-disk", commandLine: "mode=blk", sectors: 80, patterned: false)
        try await fixture.startServer()
        let (manifest, _) = try StreamBootTests.DisklessApplianceTests.publishedManifest(fixture, reference: "overlay-disk")
        let artifact = try #require(manifest.artifact(.disk))
        let published = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixture.base + "/appliance/disk.img")))
        let overlayPath = fixture.base + "/disk-overlay"
        let identity = "sha256:\(artifact.digest)"
        func streamedDisk(cache: String) async throws -> LazyBlockBackend {
            let image = try await LazyImage.open(manifest: manifest, role: .disk, loader: try fixture.loader(cache: cache))
            return LazyBlockBackend(image: image, readDeadlineSeconds: 10)
        }
        func contents(_ backend: any BlockBackend) async throws -> [UInt8] {
            try await offPool {
                var bytes = [UInt8](repeating: 0, count: Int(backend.size))
                try bytes.withUnsafeMutableBytes { try backend.read(at: 0, into: $0) }
                return bytes
            }
        }

        var expected = published
        do {
            let base = try await streamedDisk(cache: "cache-1")
            #expect(base.isReadOnly)
            let overlay = try CopyOnWriteOverlay(base: base, overlayPath: overlayPath, baseIdentity: identity)
            // Unaligned: inside one block, across a block boundary, across chunks, at the end of the disk.
            let writes: [(Int, [UInt8])] = [
                (100, [UInt8](repeating: 0xaa, count: 10)),
                (4090, [UInt8](repeating: 0xbb, count: 20)),
                (2 * 4096 - 3, [UInt8](repeating: 0xcc, count: 9000)),
                (published.count - 5, [1, 2, 3, 4, 5]),
            ]
            for (offset, bytes) in writes {
                try await offPool { try bytes.withUnsafeBytes { try overlay.write(at: UInt64(offset), from: $0) } }
                expected.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            }
            #expect(try await contents(overlay) == expected)
            try overlay.flush()
        }
        // A new client (empty cache) over the same overlay sees the writes; the image alone does not.
        let reopened = try CopyOnWriteOverlay(base: try await streamedDisk(cache: "cache-2"), overlayPath: overlayPath, baseIdentity: identity)
        #expect(try await contents(reopened) == expected)
        #expect(try await contents(try await streamedDisk(cache: "cache-3")) == published)
        // An overlay is never opened over another image.
        let other = try await streamedDisk(cache: "cache-2")
        #expect(throws: HypervisorError.self) {
            _ = try CopyOnWriteOverlay(base: other, overlayPath: overlayPath, baseIdentity: "sha256:\(Digest.of(Data("another image".utf8)))")
        }
        await fixture.stopServer()
    }
}
