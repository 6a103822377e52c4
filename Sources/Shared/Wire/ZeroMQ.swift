import CZeroMQ
import Foundation

/// A failure of a ZeroMQ call, naming the operation and the endpoint involved.
public enum ZeroMQError: Error, CustomStringConvertible, Equatable {
    case contextCreationFailed(reason: String)
    case socketCreationFailed(kind: ZeroMQSocketKind, reason: String)
    case optionFailed(option: String, reason: String)
    case bindFailed(endpoint: String, reason: String)
    case connectFailed(endpoint: String, reason: String)
    case sendTimedOut(endpoint: String, after: Duration)
    case sendFailed(endpoint: String, reason: String)
    case receiveFailed(endpoint: String, reason: String)
    case pollFailed(endpoint: String, reason: String)
    case socketClosed(endpoint: String)

    public var description: String {
        switch self {
        case .contextCreationFailed(let reason):
            return "could not create a ZeroMQ context: \(reason)"
        case .socketCreationFailed(let kind, let reason):
            return "could not create a ZeroMQ \(kind) socket: \(reason)"
        case .optionFailed(let option, let reason):
            return "could not set ZeroMQ socket option \(option): \(reason)"
        case .bindFailed(let endpoint, let reason):
            return "could not bind ZeroMQ socket to \(endpoint): \(reason)"
        case .connectFailed(let endpoint, let reason):
            return "could not connect ZeroMQ socket to \(endpoint): \(reason)"
        case .sendTimedOut(let endpoint, let after):
            return "sending to \(endpoint) did not complete within \(after)"
        case .sendFailed(let endpoint, let reason):
            return "sending to \(endpoint) failed: \(reason)"
        case .receiveFailed(let endpoint, let reason):
            return "receiving from \(endpoint) failed: \(reason)"
        case .pollFailed(let endpoint, let reason):
            return "waiting on the socket for \(endpoint) failed: \(reason)"
        case .socketClosed(let endpoint):
            return "the ZeroMQ socket for \(endpoint) is already closed"
        }
    }
}

/// The socket patterns Tessel uses. The router talks to each worker through a `dealer`; a worker
/// answers on a `router` socket, which tags every request with the peer it came from.
public enum ZeroMQSocketKind: Sendable, CustomStringConvertible {
    /// `reply` answers ZeroMQ's authentication requests (ZAP).
    case dealer, router, pair, reply

    var cValue: Int32 {
        switch self {
        case .dealer: return ZMQ_DEALER
        case .router: return ZMQ_ROUTER
        case .pair: return ZMQ_PAIR
        case .reply: return ZMQ_REP
        }
    }

    public var description: String {
        switch self {
        case .dealer: return "DEALER"
        case .router: return "ROUTER"
        case .pair: return "PAIR"
        case .reply: return "REP"
        }
    }
}

/// Owns one ZeroMQ context. Sockets keep their context alive, so the context is terminated
/// only after its last socket is closed (zmq_ctx_term would otherwise wait for them forever).
/// The context itself is thread-safe; each socket must stay on one thread at a time.
public final class ZeroMQContext: @unchecked Sendable {
    // Immutable after init; libzmq contexts are safe to share between threads.
    fileprivate let handle: UnsafeMutableRawPointer

    public init() throws {
        guard let handle = zmq_ctx_new() else {
            throw ZeroMQError.contextCreationFailed(reason: ZeroMQContext.lastError())
        }
        self.handle = handle
    }

    deinit {
        // Every socket holds a strong reference to its context, so none is open here.
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    /// A new socket of `kind` with linger 0: closing it drops unsent messages instead of
    /// waiting for a peer that may never come back.
    public func socket(_ kind: ZeroMQSocketKind) throws -> ZeroMQSocket {
        guard let socketHandle = zmq_socket(handle, kind.cValue) else {
            throw ZeroMQError.socketCreationFailed(kind: kind, reason: ZeroMQContext.lastError())
        }
        let socket = ZeroMQSocket(context: self, handle: socketHandle, kind: kind)
        try socket.setOption(ZMQ_LINGER, 0, name: "ZMQ_LINGER")
        return socket
    }

    static func lastError() -> String {
        let code = zmq_errno()
        return "\(String(cString: zmq_strerror(code))) (errno \(code))"
    }

    /// The libzmq version this process runs against, e.g. "4.3.4".
    public static var libraryVersion: String {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }
}

/// One ZeroMQ socket. Closed by `close()` or at deinit, whichever comes first, so no error
/// path leaks it. Not thread-safe (libzmq sockets are not): keep it on one thread.
/// Sends and receives take a timeout and never block past it.
public final class ZeroMQSocket {
    public let kind: ZeroMQSocketKind
    private let context: ZeroMQContext
    private var handle: UnsafeMutableRawPointer?
    /// The endpoint last bound or connected, for error messages.
    public private(set) var endpoint: String = "(unconnected)"

    fileprivate init(context: ZeroMQContext, handle: UnsafeMutableRawPointer, kind: ZeroMQSocketKind) {
        self.context = context
        self.handle = handle
        self.kind = kind
    }

    deinit {
        close()
    }

    public var isClosed: Bool { handle == nil }

    /// Closes the socket now; pending outgoing messages are dropped (linger 0). Idempotent.
    public func close() {
        if let handle {
            zmq_close(handle)
            self.handle = nil
        }
    }

    public func bind(_ endpoint: String) throws {
        let socket = try openHandle(for: endpoint)
        guard zmq_bind(socket, endpoint) == 0 else {
            throw ZeroMQError.bindFailed(endpoint: endpoint, reason: ZeroMQContext.lastError())
        }
        self.endpoint = endpoint
    }

    /// Connects (asynchronously: libzmq keeps retrying until the peer binds).
    public func connect(_ endpoint: String) throws {
        let socket = try openHandle(for: endpoint)
        guard zmq_connect(socket, endpoint) == 0 else {
            throw ZeroMQError.connectFailed(endpoint: endpoint, reason: ZeroMQContext.lastError())
        }
        self.endpoint = endpoint
    }

    /// Libzmq-level heartbeats (answered by libzmq's I/O thread, even while the peer's
    /// application thread is busy): a connection whose peer stops answering is dropped.
    public func enableHeartbeats(interval: Duration, timeout: Duration) throws {
        try setOption(ZMQ_HEARTBEAT_IVL, Int32(clamping: interval.wholeMilliseconds), name: "ZMQ_HEARTBEAT_IVL")
        try setOption(ZMQ_HEARTBEAT_TIMEOUT, Int32(clamping: timeout.wholeMilliseconds),
                      name: "ZMQ_HEARTBEAT_TIMEOUT")
    }

    /// How long libzmq waits before reconnecting after a connection is lost.
    public func setReconnectInterval(_ interval: Duration) throws {
        try setOption(ZMQ_RECONNECT_IVL, Int32(clamping: interval.wholeMilliseconds), name: "ZMQ_RECONNECT_IVL")
    }

    /// CURVE, server side: this socket's secret key; clients are checked by the context's ZAP
    /// handler (`CurveAuthenticator`), which must be running before the socket binds.
    public func makeCurveServer(secretKey: CurveKey) throws {
        try setOption(ZMQ_CURVE_SERVER, 1, name: "ZMQ_CURVE_SERVER")
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: secretKey.bytes, name: "ZMQ_CURVE_SECRETKEY")
        try setOption(ZMQ_ZAP_DOMAIN, bytes: Array("tessel".utf8), name: "ZMQ_ZAP_DOMAIN")
    }

    /// CURVE, client side: the server's public key, and this socket's key pair.
    public func makeCurveClient(serverKey: CurveKey, keys: CurveKeyPair) throws {
        try setOption(ZMQ_CURVE_SERVERKEY, bytes: serverKey.bytes, name: "ZMQ_CURVE_SERVERKEY")
        try setOption(ZMQ_CURVE_PUBLICKEY, bytes: keys.publicKey.bytes, name: "ZMQ_CURVE_PUBLICKEY")
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: keys.secretKey.bytes, name: "ZMQ_CURVE_SECRETKEY")
    }

    private func setOption(_ option: Int32, bytes: [UInt8], name: String) throws {
        let socket = try openHandle(for: endpoint)
        let status = bytes.withUnsafeBytes { zmq_setsockopt(socket, option, $0.baseAddress, $0.count) }
        guard status == 0 else { throw ZeroMQError.optionFailed(option: name, reason: ZeroMQContext.lastError()) }
    }

    func setOption(_ option: Int32, _ value: Int32, name: String) throws {
        let socket = try openHandle(for: endpoint)
        var value = value
        guard zmq_setsockopt(socket, option, &value, MemoryLayout<Int32>.size) == 0 else {
            throw ZeroMQError.optionFailed(option: name, reason: ZeroMQContext.lastError())
        }
    }

    /// Sends the frames as one (multipart) message, atomically. Throws `sendTimedOut` if the
    /// socket cannot take the message within `timeout` (e.g. no peer connected to a dealer).
    public func send(_ frames: [[UInt8]], timeout: Duration) throws {
        precondition(!frames.isEmpty, "a ZeroMQ message has at least one frame")
        let socket = try openHandle(for: endpoint)
        guard try wait(for: Int16(ZMQ_POLLOUT), timeout: timeout) else {
            throw ZeroMQError.sendTimedOut(endpoint: endpoint, after: timeout)
        }
        for (index, frame) in frames.enumerated() {
            let flags = ZMQ_DONTWAIT | (index < frames.count - 1 ? ZMQ_SNDMORE : 0)
            let sent = frame.withUnsafeBytes { bytes in
                zmq_send(socket, bytes.baseAddress, bytes.count, flags)
            }
            if sent < 0 {
                // Once the first frame is in, the rest of a multipart message is always accepted.
                throw ZeroMQError.sendFailed(endpoint: endpoint, reason: ZeroMQContext.lastError())
            }
        }
    }

    /// Receives one whole (multipart) message, or returns nil if none arrives within `timeout`.
    public func receive(timeout: Duration) throws -> [[UInt8]]? {
        let socket = try openHandle(for: endpoint)
        guard try wait(for: Int16(ZMQ_POLLIN), timeout: timeout) else { return nil }
        var frames: [[UInt8]] = []
        var message = zmq_msg_t()
        zmq_msg_init(&message)
        defer { zmq_msg_close(&message) }
        repeat {
            if zmq_msg_recv(&message, socket, ZMQ_DONTWAIT) < 0 {
                if zmq_errno() == EINTR { continue }
                throw ZeroMQError.receiveFailed(endpoint: endpoint, reason: ZeroMQContext.lastError())
            }
            let size = zmq_msg_size(&message)
            if size == 0 {
                frames.append([])
            } else {
                let data = zmq_msg_data(&message)!
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            }
        } while zmq_msg_more(&message) != 0
        return frames
    }

    /// Waits until the socket is ready for `events` or `timeout` passes; retries after signals.
    private func wait(for events: Int16, timeout: Duration) throws -> Bool {
        let socket = try openHandle(for: endpoint)
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = max(.zero, deadline - ContinuousClock.now)
            var item = zmq_pollitem_t(socket: socket, fd: 0, events: events, revents: 0)
            let ready = zmq_poll(&item, 1, remaining.wholeMillisecondsRoundedUp)
            if ready > 0 { return true }
            if ready == 0 {
                if ContinuousClock.now >= deadline { return false }
                continue
            }
            if zmq_errno() == EINTR { continue }
            throw ZeroMQError.pollFailed(endpoint: endpoint, reason: ZeroMQContext.lastError())
        }
    }

    private func openHandle(for endpoint: String) throws -> UnsafeMutableRawPointer {
        guard let handle else { throw ZeroMQError.socketClosed(endpoint: endpoint) }
        return handle
    }
}

extension Duration {
    var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    var wholeMillisecondsRoundedUp: Int {
        let (seconds, attoseconds) = components
        let millis = Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
        return attoseconds % 1_000_000_000_000_000 == 0 ? millis : millis + 1
    }
}
