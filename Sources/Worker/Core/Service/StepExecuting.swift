/// What the worker's service loop needs from the model: its description and a way to run one
/// batch step. `ModelExecutor` conforms; tests drive the service with small fakes.
public protocol StepExecuting: AnyObject {
    var info: ModelInfo { get }
    /// Runs one step over the given sequences. A sequence that cannot run comes back with its
    /// outcome's `error` set and does not disturb the others; a thrown error fails this whole
    /// step (and only it).
    func execute(_ work: [SequenceWork]) throws -> [SequenceOutcome]
    /// Moves while a step makes headway (the compute pool's operations); the heartbeat thread
    /// reads it while `execute` runs.
    var progress: ProgressCounter { get }
    /// The router says these sequences are finished; drop any per-sequence state.
    func releaseSequences(_ ids: [UInt64])
    /// Set once the tensor-parallel group this executor computes in is broken (a peer died or
    /// stalled in a collective): the step that met it failed, and no later one can succeed.
    var groupFailure: String? { get }
    /// The tensor-parallel group's formation id (0 alone): told to the router, which sends
    /// steps only to ranks of one formation.
    var groupID: UInt64 { get }
    /// Called while idle: records a group failure if a peer's process is gone.
    func checkGroup()
}

extension StepExecuting {
    /// Executors whose per-sequence state lives entirely in the router-managed KV blocks have
    /// nothing to drop.
    public func releaseSequences(_ ids: [UInt64]) {}

    public var groupFailure: String? { nil }
    public var groupID: UInt64 { 0 }
    public func checkGroup() {}
}
