import Dispatch
import Foundation
import Hypervisor
import StreamClient

/// Presents a `LazyImage` as a read-only virtio-blk backend (the boot session layers a
/// `CopyOnWriteOverlay` over it for the guest's writes). The device calls in on a vCPU thread and expects a
/// synchronous answer, so each request runs the image's async read or write as a task and the vCPU
/// waits for it: that wait is the guest's stall on a demand miss. A failed read is retried until the
/// read deadline passes (a link that drops mid-boot stalls the guest instead of failing its I/O);
/// after it, `onGiveUp` hears the error (the boot session stops the VM with it) and the request fails.
public final class LazyBlockBackend: BlockBackend, @unchecked Sendable {
    public let image: LazyImage
    public let readDeadlineSeconds: Double
    private let onGiveUp: @Sendable (any Error) -> Void

    public init(image: LazyImage, readDeadlineSeconds: Double, onGiveUp: @escaping @Sendable (any Error) -> Void = { _ in }) {
        self.image = image
        self.readDeadlineSeconds = readDeadlineSeconds
        self.onGiveUp = onGiveUp
    }

    public var size: UInt64 { UInt64(image.size) }
    public var isReadOnly: Bool { true }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let image = self.image
        let length = buffer.count
        let bytes = try retryingUntilDeadline { try await image.read(offset: Int(offset), length: length) }
        buffer.copyBytes(from: bytes)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        throw HypervisorError.ioFailed("write to the published image of \(image.manifest.config.name), which is read-only")
    }

    public func flush() throws {}

    /// Retries until the deadline (see `BlockingFetch`); past it, `onGiveUp` hears the error first.
    private func retryingUntilDeadline<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
        do {
            return try BlockingFetch(deadlineSeconds: readDeadlineSeconds).run(operation)
        } catch let error as ClientError {
            switch error {
            case .outOfRange, .overlayMismatch: break
            default: onGiveUp(error)
            }
            throw error
        }
    }
}
