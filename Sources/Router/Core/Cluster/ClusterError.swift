/// Why the worker cluster could not start, or could not run a step.
public enum ClusterError: Error, CustomStringConvertible, Sendable {
    case invalidWorkerCount(Int)
    case workerExecutableNotFound(path: String)
    case spawnFailed(rank: Int, executable: String, reason: String)
    /// A worker did not come up: it exited, refused the handshake, or never answered.
    case startupFailed(rank: Int, reason: String)
    case handshakeRejected(rank: Int, endpoint: String, message: String)
    case inconsistentWorkers(rank: Int, field: String, expected: String, found: String)
    case workerExited(rank: Int, pid: Int32, status: String, lastOutput: String)
    case workerSilent(rank: Int, endpoint: String, operation: String, after: Duration)
    /// A worker that announced heartbeats sent none for `after` during a step (stopped, or dead
    /// without its exit being seen yet).
    case heartbeatLost(rank: Int, endpoint: String, operation: String, after: Duration)
    /// A worker kept sending heartbeats, but its compute pool finished no operation for `after`.
    case workerStuck(rank: Int, endpoint: String, operation: String, after: Duration)
    case workerUnavailable(rank: Int, reason: String)
    case stepFailed(rank: Int, stepID: UInt64, message: String)
    case unexpectedReply(rank: Int, expected: String, got: String)
    case transport(rank: Int, endpoint: String, reason: String)
    /// A worker answers with another process or group formation than it handshook with.
    case workerRestarted(rank: Int, endpoint: String, detail: String)
    /// Another rank of the tensor-parallel group failed: this one cannot compute without it.
    case groupBroken(rank: Int, cause: String)
    /// The rank answers from the group formation that broke (it leaves once its peers are gone).
    case staleGroup(rank: Int)
    case shutDown

    public var description: String {
        switch self {
        case .invalidWorkerCount(let count):
            return "the number of workers must be at least 1; got \(count)"
        case .workerExecutableNotFound(let path):
            return "worker executable not found at \(path) (build the `worker` product, or pass its path)"
        case .spawnFailed(let rank, let executable, let reason):
            return "could not start worker rank \(rank) (\(executable)): \(reason)"
        case .startupFailed(let rank, let reason):
            return "worker rank \(rank) did not start: \(reason)"
        case .handshakeRejected(let rank, let endpoint, let message):
            return "worker rank \(rank) at \(endpoint) rejected the handshake: \(message)"
        case .inconsistentWorkers(let rank, let field, let expected, let found):
            return "worker rank \(rank) serves a different model: \(field) is \(found), rank 0 reports \(expected)"
        case .workerExited(let rank, let pid, let status, let lastOutput):
            let output = lastOutput.isEmpty ? "" : ": \(lastOutput)"
            return "worker rank \(rank) (pid \(pid)) \(status)\(output)"
        case .workerSilent(let rank, let endpoint, let operation, let after):
            return "worker rank \(rank) at \(endpoint) did not answer \(operation) within \(after)"
        case .heartbeatLost(let rank, let endpoint, let operation, let after):
            return "worker rank \(rank) at \(endpoint) sent no heartbeat for \(after) during \(operation) (stopped or hung process)"
        case .workerStuck(let rank, let endpoint, let operation, let after):
            return "worker rank \(rank) at \(endpoint) is stuck: no progress for \(after) in \(operation) (it is alive but its compute made no headway)"
        case .workerUnavailable(let rank, let reason):
            return "worker rank \(rank) is unavailable (\(reason))"
        case .stepFailed(let rank, let stepID, let message):
            return "worker rank \(rank) failed step \(stepID): \(message)"
        case .unexpectedReply(let rank, let expected, let got):
            return "worker rank \(rank) answered \(got) where \(expected) was expected"
        case .transport(let rank, let endpoint, let reason):
            return "talking to worker rank \(rank) at \(endpoint) failed: \(reason)"
        case .workerRestarted(let rank, let endpoint, let detail):
            return "worker rank \(rank) at \(endpoint) restarted since the handshake (\(detail))"
        case .groupBroken(let rank, let cause):
            return "the tensor-parallel group broke: rank \(rank) failed (\(cause))"
        case .staleGroup(let rank):
            return "worker rank \(rank) still belongs to the group that broke (it leaves once it sees its peers gone)"
        case .shutDown:
            return "the worker cluster is shut down"
        }
    }
}
