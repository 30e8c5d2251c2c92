import NIOHTTP2

/// The HTTP/2 settings `streamvm serve` advertises and the buffers of its routed streams. The
/// defaults come from measurements on loopback (docs/SERVING.md): see there before changing them.
public struct HTTP2Tuning: Sendable, Equatable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS. swift-nio-http2's default is 100; nginx's 128. A client
    /// that wants more waits for a stream to finish, which bounds per-connection memory.
    public var maxConcurrentStreams = 128
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much a client may send on one stream before the server
    /// acknowledges it. Only uploads (PUT, trace POST) send bodies; reads are unaffected.
    public var initialWindowSize = 1 << 20
    /// SETTINGS_MAX_FRAME_SIZE the server accepts (RFC 9113 §6.5.2 minimum and default: 16,384).
    /// The size of the DATA frames the server sends is the client's setting, not this one.
    public var maxFrameSize = 1 << 14
    /// SETTINGS_MAX_HEADER_LIST_SIZE: swift-nio-http2's default (16 KiB); requests here carry a
    /// path and a few validators.
    public var maxHeaderListSize = 1 << 14

    /// Bytes a connection may have queued for the socket before `ObjectFastPathHandler` stops
    /// reading further requests from it (NIO's write-buffer high watermark; the low one is half).
    /// It bounds the memory one client that does not read can pin. NIO's default, 64 KiB, is about
    /// two 64 KiB-chunk answers: writability then flips on nearly every read, and each flip walks
    /// every stream of the connection. Measured on loopback (docs/SERVING.md): 1 MiB cut server
    /// CPU per request from ~39 to ~33 µs; 4 MiB gained nothing more, 256 KiB half as much.
    public var writeBufferBytes = 1 << 20

    public init() {}

    var settings: HTTP2Settings {
        [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams),
            HTTP2Setting(parameter: .initialWindowSize, value: initialWindowSize),
            HTTP2Setting(parameter: .maxFrameSize, value: maxFrameSize),
            HTTP2Setting(parameter: .maxHeaderListSize, value: maxHeaderListSize),
        ]
    }
}
