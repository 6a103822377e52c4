import Foundation
import SwiftProtobuf

public typealias RouterMessage = Tessel_Wire_RouterMessage
public typealias WorkerMessage = Tessel_Wire_WorkerMessage

/// The version both sides put in their handshake; bump it with any incompatible .proto change.
public enum WireProtocol {
    public static let version: UInt32 = 4
}

/// A frame that is not the protobuf envelope it should be.
public enum WireError: Error, CustomStringConvertible {
    case malformedMessage(expected: String, from: String, reason: String)
    case unexpectedFrameCount(expected: String, got: Int, from: String)

    public var description: String {
        switch self {
        case .malformedMessage(let expected, let from, let reason):
            return "malformed \(expected) from \(from): \(reason)"
        case .unexpectedFrameCount(let expected, let got, let from):
            return "expected \(expected) from \(from), got a message of \(got) frame(s)"
        }
    }
}

/// One request as a worker's ROUTER socket sees it: who sent it (libzmq's peer identity, needed
/// to address the reply) and the decoded envelope.
public struct IncomingRouterMessage {
    public var peer: [UInt8]
    public var message: RouterMessage
}

// Framing: the router's DEALER sends one frame, the serialized RouterMessage. The worker's ROUTER
// socket receives [peer identity, envelope] and replies [peer identity, WorkerMessage], which the
// DEALER receives as one frame. Request ids live inside the envelopes.

extension ZeroMQSocket {
    /// Router side (dealer socket): sends one request.
    public func send(_ message: RouterMessage, timeout: Duration) throws {
        try send([try message.serializedBytes()], timeout: timeout)
    }

    /// Router side (dealer socket): the next worker reply, or nil if none within `timeout`.
    public func receiveWorkerMessage(timeout: Duration) throws -> WorkerMessage? {
        guard let frames = try receive(timeout: timeout) else { return nil }
        guard frames.count == 1 else {
            throw WireError.unexpectedFrameCount(expected: "one WorkerMessage frame", got: frames.count,
                                                 from: endpoint)
        }
        do {
            return try WorkerMessage(serializedBytes: frames[0])
        } catch {
            throw WireError.malformedMessage(expected: "WorkerMessage", from: endpoint, reason: "\(error)")
        }
    }

    /// Worker side (router socket): the next request, or nil if none within `timeout`.
    public func receiveRouterMessage(timeout: Duration) throws -> IncomingRouterMessage? {
        guard let frames = try receive(timeout: timeout) else { return nil }
        guard frames.count == 2 else {
            throw WireError.unexpectedFrameCount(expected: "[peer, RouterMessage]", got: frames.count,
                                                 from: endpoint)
        }
        do {
            return IncomingRouterMessage(peer: frames[0], message: try RouterMessage(serializedBytes: frames[1]))
        } catch {
            throw WireError.malformedMessage(expected: "RouterMessage", from: endpoint, reason: "\(error)")
        }
    }

    /// Worker side (router socket): replies to `peer`. A peer that has gone away is silently
    /// dropped by libzmq, which is what a worker wants (the router will resend or give up).
    public func send(_ message: WorkerMessage, to peer: [UInt8], timeout: Duration) throws {
        try send([peer, try message.serializedBytes()], timeout: timeout)
    }
}
