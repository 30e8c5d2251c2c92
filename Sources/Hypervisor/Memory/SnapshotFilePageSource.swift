import Foundation
import Glibc

/// Pages read lazily from a local memory.img, each checked against the snapshot's page digest
/// before it is handed out: a damaged or truncated file stops the VM instead of mapping a wrong page.
/// Zero pages (digest 0) are answered without reading the file.
public final class SnapshotFilePageSource: PageSource, @unchecked Sendable {
    public let pageSize: Int
    public let pageCount: Int
    public let path: String
    private let fd: Int32
    private let image: MachineSnapshot.MemoryImage

    /// Opens `path` and checks its size against `image` (the description in vmstate.json).
    public init(path: String, image: MachineSnapshot.MemoryImage) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.invalidSnapshot("cannot open \(path): \(String(cString: strerror(errno)))") }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            let error = errno
            close(fd)
            throw HypervisorError.invalidSnapshot("cannot stat \(path): \(String(cString: strerror(error)))")
        }
        guard Int(status.st_size) == image.size else {
            close(fd)
            throw HypervisorError.invalidSnapshot("\(path) is \(status.st_size) bytes, vmstate.json says \(image.size) (truncated or from another snapshot)")
        }
        self.fd = fd
        self.path = path
        self.image = image
        pageSize = image.pageSize
        pageCount = image.pageCount
    }

    deinit { close(fd) }

    public func readPage(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> PageContent {
        guard index >= 0, index < pageCount, buffer.count >= pageSize else { throw PageSourceError(page: index, problem: "outside memory.img") }
        let expected = image.digest(ofPage: index)
        if expected == 0 { return .zero }
        let page = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<pageSize])
        let count: Int
        do { count = try PositionalIO.read(fd, into: page, at: UInt64(index * pageSize), path: path) } catch {
            throw PageSourceError(page: index, problem: "cannot read \(path): \(error)")
        }
        guard count == pageSize else { throw PageSourceError(page: index, problem: "\(path) ends early (truncated)") }
        let actual = PageDigest.digest(UnsafeRawBufferPointer(rebasing: buffer[0..<pageSize]))
        guard actual == expected else {
            throw PageSourceError(page: index, problem: "\(path) is damaged: page digest 0x\(String(actual, radix: 16)), snapshot says 0x\(String(expected, radix: 16))")
        }
        return .data
    }
}
