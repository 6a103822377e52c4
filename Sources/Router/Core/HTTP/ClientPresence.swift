import Hummingbird
import HummingbirdCore
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes

/// Whether the client of a connection is still there. It is gone when the connection's input
/// closes (HTTP/1.1 clients do not half-close while they wait for an answer: this is a hang-up)
/// or the connection drops. Work done for the client stops then: a non-streaming request's
/// generation is cancelled, a stream ends, and with them their sequences and KV blocks.
public final class ClientPresence: Sendable {
    private struct State {
        var gone = false
        var actions: [Int: @Sendable () -> Void] = [:]
        var nextToken = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Runs `action` once when the client goes, at once if it has already; the token undoes it.
    func whenGone(_ action: @escaping @Sendable () -> Void) -> Int? {
        let token: Int? = state.withLockedValue { state in
            if state.gone { return nil }
            state.nextToken += 1
            state.actions[state.nextToken] = action
            return state.nextToken
        }
        if token == nil { action() }
        return token
    }

    func forget(_ token: Int?) {
        guard let token else { return }
        state.withLockedValue { _ = $0.actions.removeValue(forKey: token) }
    }

    func markGone() {
        let actions: [@Sendable () -> Void] = state.withLockedValue { state in
            if state.gone { return [] }
            state.gone = true
            defer { state.actions = [:] }
            return Array(state.actions.values)
        }
        for action in actions { action() }
    }

    /// Runs `operation` in a task of its own that is cancelled when the client goes (or when the
    /// caller is).
    func cancellingWhenGone<Value: Sendable>(_ operation: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = Task { try await operation() }
        let token = whenGone { task.cancel() }
        defer { forget(token) }
        return try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    /// `stream`, ended early when the client goes: the source's iteration is cancelled, which
    /// cancels whatever produces it.
    func ending<Element: Sendable>(_ stream: AsyncStream<Element>) -> AsyncStream<Element> {
        let (relay, continuation) = AsyncStream.makeStream(of: Element.self)
        let task = Task {
            for await element in stream { continuation.yield(element) }
            continuation.finish()
        }
        let token = whenGone {
            task.cancel()
            continuation.finish()
        }
        continuation.onTermination = { [self] _ in
            task.cancel()
            forget(token)
        }
        return relay
    }
}

/// One per connection, in the HTTP pipeline: turns the connection's input closing or the
/// connection dropping into `presence.markGone()`.
final class ClientPresenceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    let presence = ClientPresence()

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { presence.markGone() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        presence.markGone()
        context.fireChannelInactive()
    }

    /// The presence of `channel`'s client, or nil where the pipeline has no handler (a test
    /// application without the server's handlers).
    static func presence(of channel: any Channel) async -> ClientPresence? {
        try? await channel.pipeline.handler(type: ClientPresenceHandler.self).map { $0.presence }.get()
    }
}

/// The request context of Tessel's routes: Hummingbird's core storage plus the connection, so a
/// route can tell when its client has gone, and the request's record.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: (any Channel)?
    /// What the request did, for its access-log line (set by `AccessLogMiddleware`).
    var record: RequestRecord?

    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        channel = source.channel
    }

    /// The client's presence on this request's connection (nil when the pipeline cannot tell).
    func clientPresence() async -> ClientPresence? {
        guard let channel else { return nil }
        return await ClientPresenceHandler.presence(of: channel)
    }
}
