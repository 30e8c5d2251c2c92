import NIOCore

/// Limits that keep many idle, slow or hostile clients from exhausting the server's descriptors,
/// memory and tasks (docs/SECURITY.md, "Connection and request limits", lists each with its flag and
/// what happens at the limit).
public struct ConnectionLimits: Sendable, Equatable {
    /// Open connections in total; a connection accepted beyond it is closed at once (`serve
    /// --max-connections`). Sized well below a typical descriptor limit, above what the benchmarks
    /// open (50 connections).
    public var maxConnections = 4096
    /// Open connections from one client IP address (`--max-connections-per-address`); beyond it a new
    /// connection from that address is closed at once. One StreamClient uses one HTTP/2 connection per
    /// origin, so even a host running many VMs behind one address stays far below this.
    public var maxConnectionsPerAddress = 256
    /// Time a connection has to deliver a complete request head (`--head-timeout`): counted from
    /// accept for the first request (covering the TLS handshake, the HTTP/2 preface and the first
    /// HEADERS frame), and on HTTP/1.1 from the end of each response for the next one. A client that
    /// trickles a head byte by byte — progress the stall guard would accept — is closed at it.
    public var headTimeout: Duration = .seconds(10)
    /// Time an upload body has to arrive completely after its head (`--body-timeout`). At it the
    /// connection (HTTP/2: the stream) is closed and nothing is stored. The largest upload is a
    /// manifest or model; at 1 MiB/s it fits in far less than this.
    public var bodyTimeout: Duration = .seconds(120)

    public init() {}
}

extension Duration {
    /// The same span as NIO's `TimeAmount`.
    var timeAmount: TimeAmount {
        .nanoseconds(components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000)
    }
}
