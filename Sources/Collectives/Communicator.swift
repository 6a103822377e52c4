import Synchronization

/// Why a collective could not complete. Once one fails, the group is broken for good: the
/// worker reports the step's failure and exits, and its supervisor starts the group afresh.
public enum CollectiveError: Error, CustomStringConvertible, Equatable, Sendable {
    case joinFailed(group: String, rank: Int?, detail: String)
    case peerDied(rank: Int)
    case peerStalled(rank: Int, seconds: Double)
    case bufferTooLarge(bytes: Int, slotBytes: Int)
    /// A peer sent a payload of another collective or size: the ranks' calls went out of step.
    case outOfStep(rank: Int)
    case invalidEndpoint(String, reason: String)
    /// A peer's encrypted payload failed authentication: it does not hold the group's key.
    case forged(rank: Int)

    public var description: String {
        switch self {
        case .joinFailed(_, _, let detail): "tensor-parallel group: \(detail)"
        case .peerDied(let rank): "tensor-parallel group: rank \(rank) died"
        case .peerStalled(let rank, let seconds):
            "tensor-parallel group: rank \(rank) did not reach the collective within \(seconds) s"
        case .bufferTooLarge(let bytes, let slotBytes):
            "tensor-parallel group: a collective of \(bytes) bytes exceeds the \(slotBytes)-byte slots"
        case .outOfStep(let rank):
            "tensor-parallel group: rank \(rank) sent data of another collective (the ranks went out of step)"
        case .invalidEndpoint(let text, let reason):
            "tensor-parallel group: '\(text)' is not a collective endpoint: \(reason)"
        case .forged(let rank):
            "tensor-parallel group: rank \(rank) sent a payload that fails authentication (it does not hold the group's key)"
        }
    }
}

/// A range-splitting runner: calls its body once per part with that part's index range (of
/// floats for an allreduce, of rows for a gather), e.g. over the threads of a compute pool.
public typealias CollectiveSplit = (_ count: Int, _ body: (Range<Int>) -> Void) -> Void

/// The collectives of one tensor-parallel group, whatever carries them (shared memory on one
/// host, TCP across hosts). Calls come from one thread of each rank, in the same order on every
/// rank. After the first failure every call returns at once and `failure` says why.
public protocol Communicator: AnyObject, Sendable {
    var rank: Int { get }
    var worldSize: Int { get }
    /// The largest payload of one collective, in bytes.
    var capacityBytes: Int { get }
    var failure: CollectiveError? { get }
    /// Drawn by rank 0 when the group met, equal on every rank: names this formation of the
    /// group, so a router can tell ranks of a fresh group from survivors of a broken one.
    var groupID: UInt64 { get }
    /// `values[i] = Σ over ranks of values[i]`, the same bits on every rank.
    func allReduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, split: CollectiveSplit)
    /// Each rank gives `rows` rows of `columns[rank]` floats (`part`, rows packed); rank 0 gets
    /// them side by side in rows of `Σ columns` floats (`whole`, ignored on the other ranks):
    /// rank r's columns start after those of ranks 0 ..< r.
    func gatherColumns(_ part: UnsafePointer<Float>, rows: Int, columns: [Int],
                       into whole: UnsafeMutablePointer<Float>, split: CollectiveSplit)
    /// Returns once every rank has called it (or the group has failed).
    func barrier()
    /// Fails the group if a peer is gone (for idle ranks, which meet no collective that would
    /// notice).
    func checkPeers()
}

/// A group's first failure: an atomic flag read before every collective, so the fast path
/// takes no lock; the error itself is kept under a lock, read only once something failed.
final class FailureLatch: Sendable {
    private let flag = Atomic<Bool>(false)
    private let error = Mutex<CollectiveError?>(nil)

    var isSet: Bool { flag.load(ordering: .acquiring) }

    var failure: CollectiveError? { isSet ? error.withLock { $0 } : nil }

    /// Keeps the first error recorded.
    func record(_ failure: CollectiveError) {
        error.withLock { if $0 == nil { $0 = failure } }
        flag.store(true, ordering: .releasing)
    }
}

extension Duration {
    var nanoseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
    }

    var seconds: Double { Double(nanoseconds) / 1e9 }
}
