import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The service manager's notification protocol (systemd's sd_notify(3), spoken directly: one
/// datagram of `KEY=value` lines to the AF_UNIX socket named by $NOTIFY_SOCKET), for units of
/// `Type=notify`: READY=1 once serving, STATUS= lines saying what the process is doing,
/// EXTEND_TIMEOUT_USEC= while a long start-up goes on, STOPPING=1 on the way out, and WATCHDOG=1
/// pings when the unit sets `WatchdogSec` ($WATCHDOG_USEC). Without $NOTIFY_SOCKET every call
/// does nothing, so the processes behave the same outside systemd.
public final class ServiceNotifier: Sendable {
    /// How often the manager expects a watchdog ping (nil: no watchdog for this process).
    public let watchdogInterval: Duration?
    private let socketPath: [UInt8]?
    private let descriptor: Int32
    /// Monotonic nanoseconds of the last watchdog ping.
    private let lastPing = Atomic<Int>(0)
    /// Half the watchdog interval, in nanoseconds: the least time between two pings.
    private let pingSpacing: Int

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        var path: [UInt8]?
        if let name = environment["NOTIFY_SOCKET"], !name.isEmpty, name.hasPrefix("/") || name.hasPrefix("@") {
            var bytes = Array(name.utf8)
            if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }  // an abstract-namespace socket
            path = bytes.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) ? bytes : nil
        }
        socketPath = path
        descriptor = path == nil ? -1 : socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let forThisProcess = environment["WATCHDOG_PID"].map { Int32($0) == getpid() } ?? true
        if path != nil, forThisProcess, let text = environment["WATCHDOG_USEC"], let micros = Int(text), micros > 0 {
            watchdogInterval = .microseconds(micros)
            pingSpacing = micros * 500
        } else {
            watchdogInterval = nil
            pingSpacing = 0
        }
    }

    deinit { if descriptor >= 0 { close(descriptor) } }

    /// Whether a service manager is listening.
    public var isActive: Bool { descriptor >= 0 }

    /// Sends `lines` (`KEY=value` each) as one notification.
    public func send(_ lines: [String]) {
        guard descriptor >= 0, let socketPath else { return }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: socketPath) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + socketPath.count)
        let message = Array(lines.joined(separator: "\n").utf8)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { target in
                message.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), target, length) }
            }
        }
    }

    public func status(_ text: String) { send(["STATUS=\(text)"]) }

    public func ready(status text: String) { send(["READY=1", "STATUS=\(text)"]) }

    public func stopping(status text: String) { send(["STOPPING=1", "STATUS=\(text)"]) }

    /// Asks the manager to allow `duration` more for the current start-up (or stop) phase.
    public func extendTimeout(by duration: Duration) {
        send(["EXTEND_TIMEOUT_USEC=\(duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000)"])
    }

    /// Pings the watchdog if half its interval has passed since the last ping; cheap enough for
    /// every turn of a loop.
    public func watchdogIfDue() {
        guard watchdogInterval != nil else { return }
        let now = Int(DispatchTime.now().uptimeNanoseconds)
        let last = lastPing.load(ordering: .relaxed)
        guard now - last >= pingSpacing, lastPing.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged else { return }
        send(["WATCHDOG=1"])
    }

    /// While `body` runs (a long start-up: loading weights, meeting the group), tells the manager
    /// every `every` to wait `every × 3` more, so a large model is not killed by TimeoutStartSec.
    public func extendingTimeout<Value>(every: Duration = .seconds(5), _ body: () throws -> Value) rethrows -> Value {
        guard isActive else { return try body() }
        let finished = DispatchSemaphore(value: 0)
        extendTimeout(by: every * 3)
        let milliseconds = Int(every / .milliseconds(1))
        let thread = Thread { [self] in
            while finished.wait(timeout: .now() + .milliseconds(milliseconds)) == .timedOut {
                extendTimeout(by: every * 3)
            }
        }
        thread.name = "tessel-notify"
        thread.start()
        defer { finished.signal() }
        return try body()
    }

    /// The same for an asynchronous start-up (the router's wait for its workers).
    public func extendingTimeout<Value>(every: Duration = .seconds(5), _ body: () async throws -> Value) async rethrows -> Value {
        guard isActive else { return try await body() }
        extendTimeout(by: every * 3)
        let ticker = Task { [self] in
            while (try? await Task.sleep(for: every)) != nil { extendTimeout(by: every * 3) }
        }
        defer { ticker.cancel() }
        return try await body()
    }
}
