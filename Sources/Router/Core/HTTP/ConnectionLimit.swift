import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes

/// How many HTTP connections are open, shared by every connection's `ConnectionLimitHandler`.
public final class ConnectionCounter: Sendable {
    public let limit: Int
    private let open = NIOLockedValueBox(0)

    public init(limit: Int) {
        precondition(limit >= 1, "a connection limit of \(limit)")
        self.limit = limit
    }

    /// Counts a new connection; false when it is over the limit (it is counted all the same,
    /// until it closes).
    func opened() -> Bool { open.withLockedValue { $0 += 1; return $0 <= limit } }
    func closed() { open.withLockedValue { $0 -= 1 } }
}

/// Answers every request of a connection over the limit with a 503 in OpenAI's shape and closes
/// it, instead of leaving it unaccepted in the listen backlog with no answer at all.
final class ConnectionLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let counter: ConnectionCounter
    private var counted = false
    private var refusing = false

    init(counter: ConnectionCounter) { self.counter = counter }

    func channelActive(context: ChannelHandlerContext) {
        counted = true
        refusing = !counter.opened()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted { counter.closed() }
        counted = false
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard refusing else { return context.fireChannelRead(data) }
        // The request's parts go no further; its head is answered once and the connection closed.
        guard case .head = unwrapInboundIn(data) else { return }
        let error = APIError.tooManyConnections(limit: counter.limit)
        let body = ByteBuffer(string: error.json.serialized)
        var fields = HTTPFields()
        fields[.contentType] = "application/json"
        fields[.contentLength] = "\(body.readableBytes)"
        fields[.connection] = "close"
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .serviceUnavailable, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        // The completion runs on the channel's event loop, where the context may be used.
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
    }
}
