import NIOCore

/// Tells HTTP/2 with prior knowledge (h2c) from HTTP/1.1 on a plaintext connection by its first
/// bytes: an HTTP/2 client starts with the fixed connection preface (RFC 9113 §3.4), which no
/// HTTP/1.1 request line can begin with. It then lets the chosen protocol configure the pipeline,
/// replays the bytes it held back and removes itself.
final class PriorKnowledgeSniffer<Output: Sendable>: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Choice: Sendable { case http1, http2 }

    /// RFC 9113 §3.4: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
    static var preface: [UInt8] { Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) }

    private enum State {
        case sniffing
        case configuring
        case done
    }

    private var state = State.sniffing
    private var held: [ByteBuffer] = []
    private let configure: (Choice, any Channel) -> EventLoopFuture<Output>
    private let promise: EventLoopPromise<Output>

    /// Completes with the configured protocol's output, or fails if the connection closes first.
    var result: EventLoopFuture<Output> { promise.futureResult }

    init(eventLoop: any EventLoop, configure: @escaping (Choice, any Channel) -> EventLoopFuture<Output>) {
        self.configure = configure
        self.promise = eventLoop.makePromise()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        held.append(unwrapInboundIn(data))
        guard case .sniffing = state, let choice = decide() else { return }
        state = .configuring
        configure(choice, context.channel).hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let output):
                self.state = .done
                let held = self.held
                self.held = []
                for buffer in held { context.fireChannelRead(self.wrapInboundOut(buffer)) }
                context.fireChannelReadComplete()
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                self.promise.succeed(output)
            case .failure(let error):
                self.state = .done
                self.promise.fail(error)
                context.close(promise: nil)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .done = state { context.fireChannelReadComplete() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .sniffing = state {
            state = .done
            promise.fail(ChannelError.eof)
        }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if case .sniffing = state {
            state = .done
            promise.fail(ChannelError.ioOnClosedChannel)
        }
    }

    /// nil while every byte so far matches the preface but it is not complete yet.
    private func decide() -> Choice? {
        let preface = Self.preface
        var index = 0
        for buffer in held {
            for byte in buffer.readableBytesView {
                if index == preface.count { return .http2 }
                if byte != preface[index] { return .http1 }
                index += 1
            }
        }
        return index == preface.count ? .http2 : nil
    }
}
