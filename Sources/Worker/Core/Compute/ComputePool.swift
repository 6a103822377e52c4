import CKernels
import Collectives
import Synchronization

/// The worker's threads: every operation of a step (matmuls, attention, norms, activations,
/// logits) runs on them. One thread per physical core of the rank's NUMA node (or of the
/// `--cpus` set), each bound to its core; the calling thread is thread 0.
public final class ComputePool: @unchecked Sendable {
    private let handle: OpaquePointer
    public let threadCount: Int
    /// What each thread was bound to, or why it could not be, for the log.
    public let placement: String
    private let pinning: ThreadPinning?
    /// Operations run so far: read by the worker's heartbeat to tell a moving step from a stuck one.
    public let progress = ProgressCounter()

    /// How long an idle thread spins for the next operation before it sleeps.
    public static let defaultSpinMicroseconds = 100

    /// `processorSets[t]` are the OS processors thread `t` is bound to (nil: unpinned).
    public init(threads: Int, processorSets: [[Int]]? = nil, topology: Topology? = nil,
                spinMicroseconds: Int = ComputePool.defaultSpinMicroseconds) throws {
        guard threads >= 1 else { throw ComputePoolError.invalidThreadCount(threads) }
        var pinning: ThreadPinning?
        if let processorSets, let topology, !processorSets.isEmpty {
            pinning = ThreadPinning(topology: topology, sets: processorSets)
        }
        let startContext = pinning.map { Unmanaged.passUnretained($0).toOpaque() }
        guard let pool = tk_pool_create(Int32(threads), Int32(spinMicroseconds),
                                        pinning == nil ? nil : { context, thread in
                                            Unmanaged<ThreadPinning>.fromOpaque(context!).takeUnretainedValue()
                                                .bind(thread: Int(thread))
                                        }, startContext) else {
            throw ComputePoolError.cannotStartThreads(threads)
        }
        handle = pool
        threadCount = threads
        self.pinning = pinning
        if let pinning {
            pinning.bind(thread: 0)
            // Helpers bind themselves before their first job: after this one, every binding is done.
            tk_pool_run(pool, { _, _, _ in }, nil)
            placement = pinning.summary(threads: threads)
        } else {
            placement = "unpinned"
        }
    }

    deinit { tk_pool_destroy(handle) }

    /// Runs `body(thread, threads)` on every thread at once and returns when all are done.
    /// The closure stays on the caller's stack: nothing is allocated per call.
    public func run(_ body: (_ thread: Int, _ threads: Int) -> Void) {
        defer { progress.advance() }
        withoutActuallyEscaping(body) { escapable in
            var job = escapable
            withUnsafeMutablePointer(to: &job) { pointer in
                tk_pool_run(handle, { context, thread, threads in
                    context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(thread), Int(threads))
                }, pointer)
            }
        }
    }

    /// Splits `0..<count` into one contiguous range per thread (each a multiple of `granule`
    /// except the last) and runs `body` on each non-empty one. Small counts run on the caller.
    public func forEachRange(_ count: Int, granule: Int = 1, minimumPerThread: Int = 1,
                             _ body: (Range<Int>) -> Void) {
        forEachRange(count, granule: granule, minimumPerThread: minimumPerThread) { _, range in body(range) }
    }

    /// `forEachRange` that also tells `body` which thread runs it (for per-thread scratch).
    public func forEachRange(_ count: Int, granule: Int = 1, minimumPerThread: Int = 1,
                             _ body: (_ thread: Int, Range<Int>) -> Void) {
        guard count > 0 else { return }
        let threads = min(threadCount, max(1, count / max(minimumPerThread, 1)))
        guard threads > 1 else {
            body(0, 0..<count)
            progress.advance()
            return
        }
        run { thread, _ in
            guard thread < threads else { return }
            let range = Self.share(count, granule: granule, part: thread, parts: threads)
            if !range.isEmpty { body(thread, range) }
        }
    }

    /// Part `part` of `0..<count` split in `parts` nearly equal ranges on `granule` boundaries.
    @inline(__always)
    public static func share(_ count: Int, granule: Int, part: Int, parts: Int) -> Range<Int> {
        let units = (count + granule - 1) / granule
        let lower = min(count, units * part / parts * granule)
        let upper = min(count, units * (part + 1) / parts * granule)
        return lower..<upper
    }
}

/// Binds pool threads to their processors (called on each thread as it starts).
final class ThreadPinning: @unchecked Sendable {
    let topology: Topology
    let sets: [[Int]]
    private let failures = Mutex<[String]>([])

    init(topology: Topology, sets: [[Int]]) {
        self.topology = topology
        self.sets = sets
    }

    func bind(thread: Int) {
        let set = sets[thread % sets.count]
        do { try topology.bindCurrentThread(toProcessors: set) } catch { failures.withLock { $0.append("thread \(thread): \(error)") } }
    }

    func summary(threads: Int) -> String {
        let bound = (0..<threads).map { "t\($0)→cpu\(sets[$0 % sets.count].map(String.init).joined(separator: "+"))" }
        let failed = failures.withLock { $0 }
        return bound.joined(separator: " ") + (failed.isEmpty ? "" : " (binding failed: \(failed.joined(separator: "; ")))")
    }
}

public enum ComputePoolError: Error, CustomStringConvertible, Equatable {
    case invalidThreadCount(Int)
    case cannotStartThreads(Int)
    case invalidProcessorList(String)

    public var description: String {
        switch self {
        case .invalidThreadCount(let count): "compute pool: \(count) threads requested, at least 1 is needed"
        case .cannotStartThreads(let count): "compute pool: cannot start \(count) threads"
        case .invalidProcessorList(let detail): "--cpus: \(detail)"
        }
    }
}

/// A count that only goes up, safe to read from any thread while the compute threads bump it.
public final class ProgressCounter: Sendable {
    private let count = Atomic<UInt64>(0)

    public init() {}

    public var value: UInt64 { count.load(ordering: .relaxed) }

    public func advance() { count.add(1, ordering: .relaxed) }
}
