import Foundation
import Logging

/// One spawned worker process. Its stderr is forwarded to the router's stderr line by line and
/// its last line kept, so an exit can be explained ("cannot load model …") — by what the worker
/// said as it went, never by an old line about some other request.
final class WorkerProcess: @unchecked Sendable {
    let rank: Int
    let pid: Int32
    private let process: Process
    private let output: OutputTail
    private let exited: NSCondition
    private let exitBox: ExitBox

    /// Lines older than this at the exit do not explain it (a killed worker's last line may be
    /// minutes old and about another client's request).
    static let explainingOutputAge: Duration = .seconds(2)

    /// Starts `executable`. `onExit` runs once, on a background thread, when the process has
    /// exited and its output has been drained; it gets a description of the exit status and the
    /// last line the worker wrote within `explainingOutputAge` of exiting (else "").
    init(rank: Int, executable: URL, arguments: [String], environment: [String: String],
         onExit: @escaping @Sendable (_ pid: Int32, _ status: String, _ lastOutput: String) -> Void) throws
    {
        self.rank = rank
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.standardError
        process.standardInput = FileHandle.nullDevice
        let output = OutputTail(reading: pipe.fileHandleForReading, rank: rank)
        self.process = process
        self.output = output
        let exited = NSCondition()
        self.exited = exited
        // Set before run(): a process that dies at once must still be noticed.
        let box = ExitBox()
        process.terminationHandler = { finished in
            output.waitForEndOfOutput(timeout: 2)
            let status: String
            switch finished.terminationReason {
            case .exit: status = "exited with status \(finished.terminationStatus)"
            case .uncaughtSignal: status = "was killed by signal \(finished.terminationStatus)"
            @unknown default: status = "ended (status \(finished.terminationStatus))"
            }
            exited.withLock {
                box.description = status
                exited.broadcast()
            }
            onExit(finished.processIdentifier, status, output.lastLine(within: WorkerProcess.explainingOutputAge))
        }
        self.exitBox = box
        do {
            try process.run()
        } catch {
            throw ClusterError.spawnFailed(rank: rank, executable: executable.path, reason: "\(error)")
        }
        try? pipe.fileHandleForWriting.close()
        pid = process.processIdentifier
        output.start()
    }

    var isRunning: Bool {
        exited.withLock { exitBox.description == nil }
    }

    func terminate() {
        if isRunning { kill(pid, SIGTERM) }
    }

    func forceKill() {
        if isRunning { kill(pid, SIGKILL) }
    }

    /// SIGTERM, then SIGKILL if the process is still there after `grace`; returns once it is reaped
    /// (or, for a process that survives SIGKILL in uninterruptible sleep, after 5 more seconds).
    func stop(grace: Duration) async {
        guard isRunning else { return }
        terminate()
        if await waitForExit(polling: grace) { return }
        forceKill()
        _ = await waitForExit(polling: .seconds(5))
    }

    /// Waits up to `timeout` for the process to exit (true if it has), polling, so no thread of the
    /// cooperative pool is blocked.
    func waitForExit(polling timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }
}

private final class ExitBox: @unchecked Sendable {
    // Guarded by WorkerProcess.exited.
    var description: String?
}

/// Copies a worker's stderr to ours and remembers its last non-empty line.
private final class OutputTail: @unchecked Sendable {
    private let handle: FileHandle
    private let rank: Int
    private let condition = NSCondition()
    private var last = ""
    private var lastWritten = ContinuousClock.now
    private var finished = false
    /// The last line is kept up to this many trailing bytes.
    private static let maximumLineBytes = 4096

    init(reading handle: FileHandle, rank: Int) {
        self.handle = handle
        self.rank = rank
    }

    func start() {
        let thread = Thread { [self] in self.pump() }
        thread.name = "tessel-worker-\(rank)-stderr"
        thread.start()
    }

    /// The last non-empty line, if it was written within `age` of now.
    func lastLine(within age: Duration) -> String {
        condition.withLock { ContinuousClock.now - lastWritten <= age ? last : "" }
    }

    private func remember(_ line: String) {
        condition.withLock {
            last = line
            lastWritten = .now
        }
    }

    func waitForEndOfOutput(timeout: TimeInterval) {
        let deadline = Date().addingTimeInterval(timeout)
        condition.withLock {
            while !finished {
                if !condition.wait(until: deadline) { return }
            }
        }
    }

    private func pump() {
        let descriptor = handle.fileDescriptor
        var buffer = [UInt8](repeating: 0, count: 4096)
        var partial: [UInt8] = []
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            let chunk = buffer[..<count]
            chunk.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
            partial.append(contentsOf: chunk)
            // Keep only what could still be part of the last line.
            if let lastNewline = partial.lastIndex(of: UInt8(ascii: "\n")) {
                let complete = String(decoding: partial[..<lastNewline], as: UTF8.self)
                if let line = complete.split(separator: "\n").last(where: {
                    !$0.trimmingCharacters(in: .whitespaces).isEmpty
                }) {
                    remember(String(line))
                }
                partial.removeFirst(lastNewline + 1)
            }
            // A worker that never writes a newline (a progress bar) must not grow this forever.
            if partial.count > Self.maximumLineBytes { partial.removeFirst(partial.count - Self.maximumLineBytes) }
        }
        let rest = String(decoding: partial, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if !rest.isEmpty { remember(rest) }
        try? handle.close()
        condition.withLock {
            finished = true
            condition.broadcast()
        }
    }
}
