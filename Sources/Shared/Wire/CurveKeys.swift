import CZeroMQ
import Foundation

/// A CURVE key (Curve25519): 32 bytes, written in files as ZeroMQ's Z85 text (40 characters).
public struct CurveKey: Sendable, Equatable {
    public let bytes: [UInt8]

    public init?(z85 text: String) {
        guard text.utf8.count == 40 else { return nil }
        var decoded = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&decoded, text) != nil else { return nil }
        bytes = decoded
    }

    /// A key libzmq wrote as Z85 into a 41-character C buffer.
    init?(z85Buffer text: [CChar]) { self.init(z85: Self.string(z85Buffer: text)) }

    public var z85: String {
        var text = [CChar](repeating: 0, count: 41)
        _ = bytes.withUnsafeBufferPointer { zmq_z85_encode(&text, $0.baseAddress, 32) }
        return Self.string(z85Buffer: text)
    }

    private static func string(z85Buffer text: [CChar]) -> String {
        String(decoding: text.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: CurveKey
    public let secretKey: CurveKey

    /// A fresh pair from libzmq (libsodium's random source).
    public static func generate() throws -> CurveKeyPair {
        var publicText = [CChar](repeating: 0, count: 41), secretText = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&publicText, &secretText) == 0 else {
            throw CurveKeyError.generationFailed(reason: ZeroMQContext.lastError())
        }
        return CurveKeyPair(publicKey: CurveKey(z85Buffer: publicText)!, secretKey: CurveKey(z85Buffer: secretText)!)
    }
}

public enum CurveKeyError: Error, CustomStringConvertible, Equatable {
    case missing(file: String)
    case malformed(file: String)
    case exists(file: String)
    case generationFailed(reason: String)
    case writeFailed(file: String, reason: String)

    public var description: String {
        switch self {
        case .missing(let file): "CURVE key file \(file) is missing (make the keys with `router keygen DIR`)"
        case .malformed(let file): "\(file): not a CURVE key (expected one line of 40 Z85 characters)"
        case .exists(let file): "\(file) exists already; keygen does not overwrite keys"
        case .generationFailed(let reason): "could not generate a CURVE key pair: \(reason)"
        case .writeFailed(let file, let reason): "could not write \(file): \(reason)"
        }
    }
}

/// The keys of a Tessel cluster in one directory (`router keygen DIR`): the router's pair
/// (`router.key` secret, `router.pub`) and the workers' pair (`worker.key`, `worker.pub`), one
/// for every rank. The router link is ZeroMQ CURVE: workers serve with their secret key and let
/// in only the router's public key; the router checks the workers' public key. The workers' TCP
/// collectives are sealed with a key derived from the workers' secret. Each side reads only the
/// files it needs: a worker host needs `worker.key` and `router.pub`, the router `router.key` and
/// `worker.pub`.
public struct CurveKeys: Sendable, Equatable {
    public enum Role: String, Sendable { case router, worker }

    /// This side's pair.
    public let own: CurveKeyPair
    /// The other side's public key.
    public let peer: CurveKey

    public static let files = ["router.key", "router.pub", "worker.key", "worker.pub"]

    /// Reads `role`'s files from `directory`.
    public static func load(directory: URL, role: Role) throws -> CurveKeys {
        func read(_ name: String) throws -> CurveKey {
            let url = directory.appendingPathComponent(name)
            guard let text = try? String(contentsOf: url, encoding: .utf8) else { throw CurveKeyError.missing(file: url.path) }
            guard let key = CurveKey(z85: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw CurveKeyError.malformed(file: url.path)
            }
            return key
        }
        let other: Role = role == .router ? .worker : .router
        let secret = try read("\(role.rawValue).key"), peer = try read("\(other.rawValue).pub")
        // The public half follows from the secret one; a stale .pub beside it would only mislead.
        var publicText = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&publicText, secret.z85) == 0,
              let publicKey = CurveKey(z85Buffer: publicText)
        else { throw CurveKeyError.malformed(file: directory.appendingPathComponent("\(role.rawValue).key").path) }
        return CurveKeys(own: CurveKeyPair(publicKey: publicKey, secretKey: secret), peer: peer)
    }

    /// Writes fresh router and worker pairs into `directory` (made if missing); secret files
    /// are readable by their owner only. Refuses to overwrite any of the four files.
    public static func generate(into directory: URL) throws {
        let manager = FileManager.default
        for name in files where manager.fileExists(atPath: directory.appendingPathComponent(name).path) {
            throw CurveKeyError.exists(file: directory.appendingPathComponent(name).path)
        }
        do { try manager.createDirectory(at: directory, withIntermediateDirectories: true) } catch {
            throw CurveKeyError.writeFailed(file: directory.path, reason: "\(error)")
        }
        for role in [Role.router, .worker] {
            let pair = try CurveKeyPair.generate()
            for (name, key, mode) in [("\(role.rawValue).key", pair.secretKey, 0o600), ("\(role.rawValue).pub", pair.publicKey, 0o644)] {
                let path = directory.appendingPathComponent(name).path
                guard manager.createFile(atPath: path, contents: Data((key.z85 + "\n").utf8),
                                         attributes: [.posixPermissions: mode]) else {
                    throw CurveKeyError.writeFailed(file: path, reason: "cannot create it")
                }
            }
        }
    }
}

/// ZeroMQ's authentication handler (ZAP, RFC 27) for one context: a thread answering the
/// context's CURVE handshakes, letting in only `allowed` client keys. Start it before binding a
/// CURVE server socket of that context; `stop()` (or deinit) ends it.
public final class CurveAuthenticator: @unchecked Sendable {
    private let socket: ZeroMQSocket
    private let allowed: [CurveKey]
    private let stopped = NSCondition()
    private var stopping = false
    private var finished = false
    private let onRefusal: @Sendable (String) -> Void

    public init(context: ZeroMQContext, allowed: [CurveKey], onRefusal: @escaping @Sendable (String) -> Void = { _ in }) throws {
        socket = try context.socket(.reply)
        try socket.bind("inproc://zeromq.zap.01")
        self.allowed = allowed
        self.onRefusal = onRefusal
        let thread = Thread { [self] in serve() }
        thread.name = "tessel-zap"
        thread.start()
    }

    deinit { stop() }

    public func stop() {
        stopped.lock()
        stopping = true
        while !finished { stopped.wait() }
        stopped.unlock()
    }

    private var isStopping: Bool {
        stopped.lock()
        defer { stopped.unlock() }
        return stopping
    }

    private func serve() {
        defer {
            socket.close()
            stopped.lock()
            finished = true
            stopped.broadcast()
            stopped.unlock()
        }
        while !isStopping {
            // Frames: version, request id, domain, address, identity, mechanism, then the client's key.
            guard let request = try? socket.receive(timeout: .milliseconds(100)) else { continue }
            guard request.count >= 6 else { continue }
            let mechanism = String(decoding: request[5], as: UTF8.self)
            let key = request.count > 6 ? request[6] : []
            let accepted = mechanism == "CURVE" && allowed.contains { $0.bytes == key }
            if !accepted {
                let address = String(decoding: request[3], as: UTF8.self)
                onRefusal("refused a \(mechanism) connection from \(address.isEmpty ? "an unknown address" : address): its key is not the router's")
            }
            let reply: [[UInt8]] = [Array("1.0".utf8), request[1], Array((accepted ? "200" : "400").utf8),
                                    Array((accepted ? "OK" : "key not allowed").utf8), [], []]
            try? socket.send(reply, timeout: .seconds(1))
        }
    }
}
