import Logging
import NIOCore
import Synchronization

/// Counts the server's open connections, in total and per client address, and refuses those beyond
/// `ConnectionLimits`. Shared by all event loops of one server.
final class ConnectionCounter: Sendable {
    enum Refusal: String, Sendable {
        case total = "total_limit"
        case perAddress = "address_limit"
    }

    private struct Counts {
        var total = 0
        var byAddress: [String: Int] = [:]
    }

    private let limits: ConnectionLimits
    private let counts = Mutex(Counts())

    init(limits: ConnectionLimits) { self.limits = limits }

    /// Takes a slot for a connection from `address`, or says which limit it would exceed.
    func admit(_ address: String) -> Refusal? {
        counts.withLock { counts in
            if counts.total >= limits.maxConnections { return .total }
            let fromAddress = counts.byAddress[address, default: 0]
            if fromAddress >= limits.maxConnectionsPerAddress { return .perAddress }
            counts.total += 1
            counts.byAddress[address] = fromAddress + 1
            return nil
        }
    }

    /// Gives back the slot `admit` took.
    func release(_ address: String) {
        counts.withLock { counts in
            counts.total -= 1
            let left = counts.byAddress[address, default: 1] - 1
            counts.byAddress[address] = left > 0 ? left : nil
        }
    }

    var open: Int { counts.withLock { $0.total } }
}

/// First in every connection's pipeline: takes a slot from `ConnectionCounter` when the connection
/// becomes active and closes it at once when a limit is reached (the client sees the connection
/// closed before any answer, the cheapest refusal there is); gives the slot back when it closes.
final class ConnectionAdmission: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let counter: ConnectionCounter
    private let metrics: ServerMetrics
    private let log: RateLimitedLog
    /// The address whose slot this connection holds; nil before admission and after release.
    private var admitted: String?
    private var decided = false

    init(counter: ConnectionCounter, metrics: ServerMetrics, log: RateLimitedLog) {
        self.counter = counter
        self.metrics = metrics
        self.log = log
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { decide(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        // A refused connection is closed here; the handlers behind never see it active.
        if decide(context) { context.fireChannelActive() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A refused connection is being closed: nothing it sent is looked at.
        if admitted != nil { context.fireChannelRead(data) }
    }

    /// Whether the connection may stay open.
    @discardableResult
    private func decide(_ context: ChannelHandlerContext) -> Bool {
        guard !decided else { return admitted != nil }
        decided = true
        let address = Self.clientAddress(context.channel)
        if let refusal = counter.admit(address) {
            metrics.recordConnectionRefused(refusal.rawValue)
            log.notice(refusal.rawValue, "refused a connection: too many open connections", metadata: [
                "client": "\(address)", "limit": "\(refusal == .total ? "--max-connections" : "--max-connections-per-address")",
            ])
            context.close(promise: nil)
            return false
        }
        admitted = address
        metrics.recordConnectionOpened()
        return true
    }

    private func release() {
        guard let address = admitted else { return }
        admitted = nil
        counter.release(address)
        metrics.recordConnectionClosed()
    }

    /// The client's IP address without its port; every connection without one (a Unix socket) shares "local".
    static func clientAddress(_ channel: any Channel) -> String {
        channel.remoteAddress?.ipAddress ?? "local"
    }
}
