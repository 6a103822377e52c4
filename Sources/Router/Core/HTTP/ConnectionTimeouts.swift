import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// The clocks of one HTTP/1.1 connection, as uvicorn keeps them: an idle keep-alive connection
/// (no byte of a next request) is closed after `idle`; once a request's first byte is in, its
/// headers must be complete within `request`, and from its head its body within `request` again.
/// While the response is being produced and sent nothing runs: generation may take minutes.
final class ConnectionTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum Phase {
        /// Between requests: waiting for the next one's first byte.
        case idle
        /// A request has started; its head is not complete.
        case head
        /// The head is in; the body is not complete.
        case body
        /// The request is in; its response is owed.
        case responding
    }

    private let idle: TimeAmount?
    private let request: TimeAmount?
    private var phase = Phase.idle
    /// Requests read in full whose responses have not ended. A client may send its next request
    /// as soon as it has the last byte of a response, before the server has written that
    /// response's end: the connection is idle only when every request read has been answered.
    private var unanswered = 0
    /// Responses ended before their request was read in full (an early 401 or 413).
    private var answeredEarly = 0
    private var timer: Scheduled<Void>?

    init(idle: Duration?, request: Duration?) {
        self.idle = idle.map(TimeAmount.init)
        self.request = request.map(TimeAmount.init)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Only the raw bytes tell when a request's headers started arriving.
        try? context.pipeline.syncOperations.addHandler(FirstByteWatcher(owner: self), position: .first)
        if context.channel.isActive { enter(.idle, context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        enter(.idle, context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    /// From `FirstByteWatcher`: bytes arrived on the connection.
    fileprivate func bytesArrived(context: ChannelHandlerContext) {
        if phase == .idle { enter(.head, context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: enter(.body, context: context)
        case .body: break
        case .end:
            if answeredEarly > 0 {
                answeredEarly -= 1
                enter(.idle, context: context)
            } else {
                unanswered += 1
                enter(.responding, context: context)
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            if unanswered == 0 {
                answeredEarly += 1
            } else {
                unanswered -= 1
                // A next request already under way keeps its own clock (none once it is read).
                if unanswered == 0, phase == .responding { enter(.idle, context: context) }
            }
        }
        context.write(data, promise: promise)
    }

    private func enter(_ next: Phase, context: ChannelHandlerContext) {
        phase = next
        timer?.cancel()
        timer = nil
        let limit: TimeAmount?
        switch next {
        case .idle: limit = idle
        case .head, .body: limit = request
        case .responding: limit = nil
        }
        guard let limit else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: limit) { [self] in
            timer = nil
            guard phase == next else { return }
            context.close(promise: nil)
        }
    }
}

/// First in the pipeline: tells its `ConnectionTimeoutHandler` when bytes arrive, and passes them on.
private final class FirstByteWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    // Weak: the owner may leave the pipeline first.
    private weak var owner: ConnectionTimeoutHandler?
    private var ownerContext: ChannelHandlerContext?

    init(owner: ConnectionTimeoutHandler) { self.owner = owner }

    func handlerAdded(context: ChannelHandlerContext) {
        if let owner { ownerContext = try? context.pipeline.syncOperations.context(handler: owner) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { ownerContext = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let owner, let ownerContext { owner.bytesArrived(context: ownerContext) }
        context.fireChannelRead(data)
    }
}
