import Tokenizers
import Wire

/// Which waiting sequence goes first, as vLLM's `--scheduling-policy`.
public enum SchedulingPolicy: String, Sendable, Equatable, CaseIterable {
    /// Arrival order; the newest running sequence is preempted first.
    case fcfs
    /// By the request's `priority` (lower first), then arrival; the running sequence with the
    /// highest priority value (newest among equals) is preempted first.
    case priority
}

/// Step limits, as vLLM users know them.
public struct SchedulerConfiguration: Sendable, Equatable {
    /// Most sequences in one step (`--max-num-seqs`).
    public var maxSequences: Int
    /// Most tokens (decode tokens + prefill chunks) in one step (`--max-num-batched-tokens`).
    public var maxBatchedTokens: Int
    /// Reuse KV blocks of identical prompt prefixes.
    public var prefixCaching: Bool
    /// Steps that carry prefill chunks are kept near this many seconds (by the learned step cost),
    /// so a request arriving while a long prompt is prefilled waits at most about one such step;
    /// nil: token budget only.
    public var targetStepSeconds: Double?
    /// A prefill chunk is never cut below this many tokens by the time target, so every prompt
    /// advances each step.
    public var minimumPrefillChunk: Int
    public var policy: SchedulingPolicy
    /// Most sequences waiting for their first step (`--max-queued-requests`): a new one beyond it
    /// is refused with `queueFull` (each of a request's `n` choices counts, as in vLLM's engine;
    /// preempted sequences always go back). nil: no bound.
    public var maxWaitingSequences: Int?
    /// Decode passes the workers run for one step when every running sequence is decoding and
    /// none waits (`--num-scheduler-steps`, as vLLM's multi-step scheduling): each sampled token
    /// is fed back on the workers, so the round trip through the router is paid once per this
    /// many tokens. A request arriving meanwhile waits for the step to end; tokens reach clients
    /// this many at a time.
    public var decodeSteps: Int

    public init(maxSequences: Int = 64, maxBatchedTokens: Int = 512, prefixCaching: Bool = true,
                targetStepSeconds: Double? = 0.2, minimumPrefillChunk: Int = 16, policy: SchedulingPolicy = .fcfs,
                maxWaitingSequences: Int? = nil, decodeSteps: Int = 1) {
        precondition(maxWaitingSequences.map { $0 > 0 } ?? true, "the waiting queue must hold at least one sequence")
        precondition(decodeSteps >= 1, "a step runs at least one decode pass")
        self.decodeSteps = decodeSteps
        self.maxWaitingSequences = maxWaitingSequences
        self.policy = policy
        self.maxSequences = maxSequences
        self.maxBatchedTokens = maxBatchedTokens
        self.prefixCaching = prefixCaching
        self.targetStepSeconds = targetStepSeconds
        self.minimumPrefillChunk = minimumPrefillChunk
    }
}

/// The KV capacity and context length the scheduler plans with (from the workers' handshake,
/// possibly lowered by `--kv-cache-tokens`).
public struct SchedulerModelLimits: Sendable, Equatable {
    public var maxContextLength: Int
    public var kvBlockCount: Int
    public var kvBlockSize: Int
    /// Per KV group, the positions its layers attend back over (0: the whole context). A
    /// sequence's block table holds one block of each group per block of positions
    /// (group-interleaved); the blocks a group's window has passed are given back, so such a
    /// group never holds more than about `window + chunk` tokens of a sequence.
    public var groupWindows: [Int]

    public init(maxContextLength: Int, kvBlockCount: Int, kvBlockSize: Int, groupWindows: [Int] = [0]) {
        precondition(!groupWindows.isEmpty, "a model has at least one KV group")
        self.maxContextLength = maxContextLength
        self.kvBlockCount = kvBlockCount
        self.kvBlockSize = kvBlockSize
        self.groupWindows = groupWindows
    }

    public var groupCount: Int { groupWindows.count }

    /// Token slots of the whole KV cache, were every group to hold every position.
    public var kvCapacityTokens: Int { kvBlockCount / groupCount * kvBlockSize }

    /// With a window on every group, the longest prefill chunk: it and the window behind it fit
    /// the whole cache, so a sequence longer than the cache (a long prompt, or one recomputed
    /// after preemption) still goes through, a chunk at a time.
    var windowChunkLimit: Int {
        guard !groupWindows.contains(0) else { return Int.max }
        return max(1, kvCapacityTokens - groupWindows.max()! - 2 * kvBlockSize)
    }
}

/// Queue order: lower priority values first, then earlier arrivals.
struct QueueKey: Comparable {
    var priority: Int
    var arrival: UInt64

    static func < (a: QueueKey, b: QueueKey) -> Bool { (a.priority, a.arrival) < (b.priority, b.arrival) }
}

/// How much of a sequence the workers hold (`SequenceStep.continues`): the first `blocks` ids of
/// its block table and the first `generated` tokens it generated.
struct WorkerCopy: Equatable {
    var blocks: Int
    var generated: Int
}

/// One running or waiting sequence, owned by the scheduler actor.
final class ScheduledSequence {
    let id: UInt64
    let request: SequenceRequest
    let arrival: UInt64
    let continuation: AsyncThrowingStream<SequenceEvent, any Error>.Continuation
    /// When it was submitted, for the latency metrics.
    let arrivedAt = ContinuousClock.now
    var lastTokenAt: ContinuousClock.Instant?
    /// Set at its first admission (a preempted sequence is admitted again).
    var everAdmitted = false
    /// Prompt followed by the tokens generated so far.
    var tokens: [TokenID]
    /// Tokens whose KV is in the cache (the one number the scheduler plans with).
    var computedTokens = 0
    /// KV groups of the model (`SchedulerModelLimits.groupWindows`).
    let groups: Int
    /// Its KV blocks, group-interleaved: entry `b × groups + g` is group g's block for positions
    /// `b × blockSize ..<`. Whenever they are taken away (preemption, a failed admission, the
    /// end), the workers' copy of the sequence goes stale with them.
    var blocks: [Int] = [] {
        didSet {
            if blocks.isEmpty {
                workerCopy = nil
                blocksBehindWindow = Array(repeating: 0, count: groups)
            }
        }
    }
    /// Blocks of positions in the table.
    var tableLength: Int { blocks.count / groups }
    /// Per group: leading blocks already given back because the group's window has passed them
    /// (their ids stay in `blocks`, so positions still map to table entries; the workers never
    /// read them).
    var blocksBehindWindow: [Int]
    /// The blocks this sequence still holds a reference to.
    var heldBlocks: [Int] {
        var held: [Int] = []
        held.reserveCapacity(blocks.count)
        for (index, block) in blocks.enumerated() where index / groups >= blocksBehindWindow[index % groups] {
            held.append(block)
        }
        return held
    }
    /// What the workers hold of it from earlier steps; nil: nothing, the next step sends it whole.
    var workerCopy: WorkerCopy?
    /// Named in a step at least once: the workers may hold it until told it finished.
    var everSent = false
    /// Blocks of positions whose blocks are registered with the prefix cache (in every group),
    /// and each group's hash chain over them.
    var registeredBlocks = 0
    var registeredChains: [UInt64]
    var generatedCount = 0
    /// Filled while the prompt is prefilled when prompt logprobs are asked for.
    var promptLogprobs: [PromptTokenLogprob]?
    var promptLogprobsDelivered = false
    var cancelled = false
    var preemptions = 0
    /// Structured output's state, advanced by every token generated (kept across preemption:
    /// the generated tokens are kept too).
    let constraint: (any TokenConstraint)?

    init(id: UInt64, request: SequenceRequest, arrival: UInt64, groups: Int,
         continuation: AsyncThrowingStream<SequenceEvent, any Error>.Continuation) {
        self.id = id
        self.groups = groups
        blocksBehindWindow = Array(repeating: 0, count: groups)
        registeredChains = Array(repeating: 0, count: groups)
        self.request = request
        self.arrival = arrival
        self.continuation = continuation
        self.tokens = request.promptTokens
        constraint = request.constraint?.makeState()
    }

    var promptCount: Int { request.promptTokens.count }
    var wantsPromptLogprobs: Bool { request.promptLogprobs != nil && !promptLogprobsDelivered }
}

/// A step planned by the scheduler: the wire message, and what each entry covered.
public struct PlannedStep: Sendable {
    public var message: Tessel_Wire_Step
    /// (sequence id, tokens computed by this step), in message order.
    public var entries: [(sequenceID: UInt64, tokenCount: Int)]
    /// Decode entries (one token of an already-prefilled sequence) and prefill tokens, for tests and metrics.
    public var decodeCount: Int
    public var prefillTokenCount: Int
    /// Σ over computed tokens of the positions each attends to, in thousands (the step cost model's feature).
    public var attendedThousands: Double
    /// The most decode passes an entry runs (1: an ordinary step).
    public var decodePasses: Int { message.sequences.map { max(1, Int($0.decodeSteps)) }.max() ?? 1 }
    public var totalTokens: Int { entries.reduce(0) { $0 + $1.tokenCount } }
}

/// Counters for tests, `/health` and logs.
public struct SchedulerStatistics: Sendable, Equatable {
    public var waiting: Int
    public var running: Int
    public var usedBlocks: Int
    public var freeBlocks: Int
    public var preemptions: Int
    public var prefixCacheHitTokens: Int
    /// Tokens looked up in the prefix cache (of which `prefixCacheHitTokens` were found).
    public var prefixCacheQueriedTokens: Int
    public var stepsPlanned: Int
}

/// Continuous batching with one rule: every sequence has a count of computed tokens, every step
/// a token budget. Each step takes, in order: the decode token of every running sequence (oldest
/// first), first chunks of waiting sequences (arrival order), then the rest of running prefills.
/// Prefill chunks also share a time budget (`targetStepSeconds`, by the learned `StepCostModel`):
/// a long prompt advances in chunks that keep steps short, and a short request arriving meanwhile
/// is admitted in the next step instead of waiting for the whole long prefill. Waiting order and
/// preemption follow the `SchedulingPolicy`: when the KV cache runs out, the running sequence last
/// in queue order gives its blocks back and is recomputed later. Requests enter through this
/// actor; the `StepLoop` drives it.
public actor Scheduler {
    public let configuration: SchedulerConfiguration
    public let limits: SchedulerModelLimits
    private var blockManager: KVBlockManager
    private var waiting: [ScheduledSequence] = []
    private var running: [ScheduledSequence] = []
    private var sequences: [UInt64: ScheduledSequence] = [:]
    private var inFlight: PlannedStep?
    private var nextSequenceID: UInt64 = 1
    private var nextStepID: UInt64 = 1
    private var arrivals: UInt64 = 0
    private var pendingReleases: [UInt64] = []
    private var accepting = true
    public var isAccepting: Bool { accepting }
    /// Why the last step failed; nil once a step succeeds again.
    public private(set) var lastStepFailure: String?
    private var preemptionCount = 0
    private var prefixCacheHitTokens = 0
    private var prefixCacheQueriedTokens = 0
    /// Latencies and token counts for `/metrics`.
    public nonisolated let metrics: ServingMetrics
    private var stepsPlanned = 0
    private var costModel = StepCostModel()
    private let wakeUp: AsyncStream<Void>.Continuation
    /// Yields whenever there may be new work (a request, a cancellation, a release).
    public nonisolated let workSignals: AsyncStream<Void>

    public init(configuration: SchedulerConfiguration, limits: SchedulerModelLimits,
                metrics: ServingMetrics = ServingMetrics()) {
        precondition(configuration.maxSequences > 0 && configuration.maxBatchedTokens > 0)
        self.metrics = metrics
        self.configuration = configuration
        self.limits = limits
        self.blockManager = KVBlockManager(blockCount: limits.kvBlockCount, blockSize: limits.kvBlockSize,
                                           prefixCaching: configuration.prefixCaching)
        (workSignals, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: Requests

    /// Queues a sequence; its events arrive on the returned stream. Ending the stream's
    /// iteration (a client going away) cancels the sequence and frees its blocks.
    public func submit(_ request: SequenceRequest) throws(GenerationError) -> (id: UInt64, events: AsyncThrowingStream<SequenceEvent, any Error>) {
        guard accepting else { throw .shuttingDown }
        let total = request.promptTokens.count + 1
        guard !request.promptTokens.isEmpty else { throw .doesNotFit("the prompt is empty") }
        guard total <= limits.maxContextLength else {
            throw .doesNotFit("the prompt has \(request.promptTokens.count) tokens; the context holds \(limits.maxContextLength)")
        }
        // The prompt in one chunk is the most a sequence ever computes at once.
        let chunk = min(total, configuration.maxBatchedTokens)
        guard peakBlocks(forTokens: total, chunk: chunk) <= limits.kvBlockCount else {
            throw .doesNotFit("the prompt has \(request.promptTokens.count) tokens; the KV cache holds \(limits.kvCapacityTokens)")
        }
        if let limit = configuration.maxWaitingSequences, waiting.count >= limit { throw .queueFull(limit: limit) }
        let id = nextSequenceID
        nextSequenceID += 1
        arrivals += 1
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: SequenceEvent.self, throwing: (any Error).self)
        let sequence = ScheduledSequence(id: id, request: request, arrival: arrivals, groups: limits.groupCount,
                                         continuation: continuation)
        sequences[id] = sequence
        enqueue(sequence)
        continuation.onTermination = { [weak self] termination in
            if case .finished = termination { return }
            guard let self else { return }
            Task { await self.cancel(id) }
        }
        wakeUp.yield()
        return (id, stream)
    }

    /// Ends a sequence early (client gone, stop string found): frees its blocks now, or when
    /// the step it is part of comes back.
    public func cancel(_ id: UInt64) {
        guard let sequence = sequences[id] else { return }
        sequence.cancelled = true
        if isInFlight(id) { return }
        retire(sequence)
        sequence.continuation.finish()
        wakeUp.yield()
    }

    /// Ends a sequence whose text reached a stop string: it finished with `stop` (and is counted
    /// so in the metrics), then goes as a cancelled one does.
    public func finishByStopString(_ id: UInt64) {
        guard let sequence = sequences[id], !sequence.cancelled else { return }
        metrics.finished(.stop, afterSeconds: (ContinuousClock.now - sequence.arrivedAt).timeInterval)
        cancel(id)
    }

    /// Stops taking new sequences; the ones already queued still run to their end.
    public func stopAccepting() {
        accepting = false
        wakeUp.yield()
    }

    public var isIdle: Bool { waiting.isEmpty && running.isEmpty && inFlight == nil }

    public var statistics: SchedulerStatistics {
        SchedulerStatistics(waiting: waiting.count, running: running.count, usedBlocks: blockManager.usedBlockCount,
                            freeBlocks: blockManager.freeBlockCount, preemptions: preemptionCount,
                            prefixCacheHitTokens: prefixCacheHitTokens, prefixCacheQueriedTokens: prefixCacheQueriedTokens,
                            stepsPlanned: stepsPlanned)
    }

    /// Fails every sequence, queued or running, except those of the step in flight (nothing will
    /// run them any more: the step loop was cancelled).
    public func failAll(_ error: GenerationError) {
        for sequence in Array(sequences.values) where !isInFlight(sequence.id) {
            retire(sequence)
            sequence.continuation.finish(throwing: error)
        }
    }

    /// The workers' KV cache was lost (a worker restarted): every running sequence restarts
    /// from scratch and the prefix cache forgets what it held.
    public func dropComputedKV() {
        for sequence in running.reversed() { preempt(sequence) }
        blockManager.forgetCachedContents()
    }

    // MARK: Planning

    /// Plans the next step, or nil when nothing can run. Only one step is in flight at a time.
    public func planStep() -> PlannedStep? {
        precondition(inFlight == nil, "a step is already in flight")
        var budget = configuration.maxBatchedTokens
        var scheduled: [(ScheduledSequence, Int)] = []
        var preempted = false
        // Seconds left for prefill chunks in this step (nil: no time limit, or no estimate yet).
        var timeLeft: Double? = configuration.targetStepSeconds.flatMap { target in
            costModel.stepOverhead.map { target - $0 }
        }
        /// How many of `wanted` tokens from `start` the step can still take.
        func chunk(_ wanted: Int, from start: Int) -> Int {
            var take = min(wanted, budget, limits.windowChunkLimit)
            if let seconds = timeLeft, let fitting = costModel.tokens(fitting: seconds, start: start) {
                take = min(take, max(fitting, min(configuration.minimumPrefillChunk, wanted)))
            }
            return take
        }
        func charge(_ take: Int, from start: Int) {
            budget -= take
            if let seconds = timeLeft, let cost = costModel.cost(start: start, tokens: take) { timeLeft = seconds - cost }
        }
        /// Gives `sequence` blocks for `take` more tokens, preempting running sequences (last in
        /// queue order first) if the cache is full; false if `sequence` itself had to go.
        func place(_ sequence: ScheduledSequence, _ take: Int) -> Bool {
            while true {
                if extendBlocks(of: sequence, toCover: sequence.computedTokens + take) { return true }
                let victim = preemptionVictim()
                preempt(victim)
                preempted = true
                scheduled.removeAll { $0.0 === victim }
                if victim === sequence { return false }
            }
        }

        // 1. The decode token of every running sequence, oldest first.
        var index = 0
        while index < running.count, budget > 0 {
            let sequence = running[index]
            index += 1
            guard sequence.tokens.count - sequence.computedTokens == 1 else { continue }
            guard place(sequence, 1) else { break }
            scheduled.append((sequence, 1))
            budget -= 1
        }

        // 2. Waiting sequences, in queue order, while there is room (not after a preemption:
        // the cache is full).
        let now = ContinuousClock.now
        while !preempted, budget > 0, running.count < configuration.maxSequences, let sequence = waiting.first {
            let looksUp = sequence.computedTokens == 0 && sequence.blocks.isEmpty && !sequence.wantsPromptLogprobs
            if looksUp {
                // At least one token is always computed, so the step has logits to sample from.
                sequence.blocks = acquireCachedPrefix(of: sequence.tokens)
                sequence.computedTokens = sequence.tableLength * limits.kvBlockSize
            }
            let start = sequence.computedTokens
            let take = chunk(sequence.tokens.count - start, from: start)
            guard extendBlocks(of: sequence, toCover: start + take) else {
                blockManager.free(sequence.heldBlocks)
                sequence.blocks = []
                sequence.computedTokens = 0
                break
            }
            prefixCacheHitTokens += sequence.computedTokens
            if looksUp, configuration.prefixCaching { prefixCacheQueriedTokens += sequence.tokens.count }
            if !sequence.everAdmitted {
                sequence.everAdmitted = true
                metrics.admitted(afterSeconds: (now - sequence.arrivedAt).timeInterval)
                if sequence.computedTokens > 0 { sequence.continuation.yield(.prefixCacheHit(tokens: sequence.computedTokens)) }
            }
            waiting.removeFirst()
            running.append(sequence)
            scheduled.append((sequence, take))
            charge(take, from: start)
        }

        // 3. The rest of running prefills, oldest first, in what is left. A step that gives a newly
        // admitted prompt its first token gives them only their minimum chunk: its time to first
        // token is this step's length.
        if scheduled.contains(where: { $0.0.computedTokens + $0.1 == $0.0.tokens.count && $0.0.generatedCount == 0 }) {
            timeLeft = timeLeft.map { _ in 0 }
        }
        index = 0
        while index < running.count, budget > 0 {
            let sequence = running[index]
            index += 1
            let remaining = sequence.tokens.count - sequence.computedTokens
            guard remaining > 0, !scheduled.contains(where: { $0.0 === sequence }) else { continue }
            let start = sequence.computedTokens
            let take = chunk(remaining, from: start)
            guard take > 0 else { continue }
            guard place(sequence, take) else { break }
            scheduled.append((sequence, take))
            charge(take, from: start)
        }

        guard !scheduled.isEmpty else { return nil }
        let passes = decodePasses(scheduled)
        var message = Tessel_Wire_Step()
        message.stepID = nextStepID
        nextStepID += 1
        message.finishedSequences = pendingReleases
        pendingReleases.removeAll()
        var entries: [(sequenceID: UInt64, tokenCount: Int)] = []
        var decodes = 0
        var prefillTokens = 0
        var attended = 0.0
        for ((sequence, take), passes) in zip(scheduled, passes) {
            attended += StepCostModel.attended(start: sequence.computedTokens, tokens: take)
            message.sequences.append(wireStep(for: sequence, take: take, decodeSteps: passes))
            entries.append((sequence.id, take))
            if take == 1, sequence.computedTokens >= sequence.promptCount { decodes += 1 } else { prefillTokens += take }
        }
        let step = PlannedStep(message: message, entries: entries, decodeCount: decodes, prefillTokenCount: prefillTokens,
                               attendedThousands: attended)
        inFlight = step
        stepsPlanned += 1
        return step
    }

    /// Decode passes for each of a step's entries: more than one only when every running
    /// sequence is decoding and none waits (a longer step would hold them back), no sequence
    /// follows a grammar (its mask is worked out here, a token at a time), and the blocks for
    /// the further positions are free without preempting anyone. A sequence runs no more passes
    /// than it has tokens left (`max_tokens`, the context).
    private func decodePasses(_ scheduled: [(ScheduledSequence, Int)]) -> [Int] {
        let single = Array(repeating: 1, count: scheduled.count)
        guard configuration.decodeSteps > 1, waiting.isEmpty, scheduled.count == running.count else { return single }
        for (sequence, take) in scheduled {
            guard take == 1, sequence.tokens.count - sequence.computedTokens == 1,
                  sequence.computedTokens >= sequence.promptCount, sequence.constraint == nil else { return single }
        }
        return scheduled.map { sequence, _ in
            let passes = min(configuration.decodeSteps, sequence.request.maxNewTokens - sequence.generatedCount,
                             limits.maxContextLength - sequence.tokens.count)
            // Positions computedTokens ..< computedTokens + passes get keys and values.
            guard passes > 1, extendBlocks(of: sequence, toCover: sequence.computedTokens + passes) else { return 1 }
            return passes
        }
    }

    /// Gives `sequence` the blocks (in every group) its table lacks for positions `0 ..< tokens`;
    /// false, taking none, when the cache has too few free.
    private func extendBlocks(of sequence: ScheduledSequence, toCover tokens: Int) -> Bool {
        let missing = (blockManager.blocksNeeded(forTokens: tokens) - sequence.tableLength) * limits.groupCount
        guard missing > 0 else { return true }
        guard let blocks = blockManager.allocate(missing) else { return false }
        sequence.blocks += blocks
        return true
    }

    private func wireStep(for sequence: ScheduledSequence, take: Int, decodeSteps: Int) -> Tessel_Wire_SequenceStep {
        let start = sequence.computedTokens
        var entry = Tessel_Wire_SequenceStep()
        entry.sequenceID = sequence.id
        entry.tokens = Array(sequence.tokens[start..<start + take])
        entry.startPosition = UInt32(start)
        if decodeSteps > 1 { entry.decodeSteps = UInt32(decodeSteps) }
        // Only what the workers do not hold yet: new block ids, new generated tokens.
        let held = sequence.workerCopy
        let blocksNeeded = max(blockManager.blocksNeeded(forTokens: start + take + decodeSteps - 1), held?.blocks ?? 0)
        entry.continues = held != nil
        let groups = limits.groupCount
        entry.blockTable = sequence.blocks[(held?.blocks ?? 0) * groups..<blocksNeeded * groups].map { UInt32($0) }
        entry.sample = start + take == sequence.tokens.count
        entry.wantPromptLogprobs = sequence.wantsPromptLogprobs && start < sequence.promptCount
        entry.sampleIndex = UInt32(sequence.request.sampleIndex)
        let request = sequence.request
        entry.sampling = request.sampling.wire(
            topLogprobs: max(request.logprobs ?? 0, entry.wantPromptLogprobs ? request.promptLogprobs ?? 0 : 0),
            wantLogprobs: request.logprobs != nil || entry.wantPromptLogprobs)
        let generated = sequence.tokens.count - sequence.promptCount
        if request.sampling.usesPenalties, generated > (held?.generated ?? 0) {
            entry.generatedTokens = Array(sequence.tokens[(sequence.promptCount + (held?.generated ?? 0))...])
        }
        if request.sampling.repetitionPenalty != 1, held == nil {
            entry.promptTokens = Array(sequence.tokens[..<sequence.promptCount])
        }
        sequence.workerCopy = WorkerCopy(blocks: blocksNeeded, generated: max(generated, 0))
        sequence.everSent = true
        if entry.sample, let constraint = sequence.constraint {
            let started = ContinuousClock.now
            let remaining = max(1, sequence.request.maxNewTokens - sequence.generatedCount)
            entry.allowedTokens = constraint.allowedTokens(remainingTokens: remaining).wireBytes
            metrics.constraintMask(seconds: (ContinuousClock.now - started).timeInterval)
        }
        return entry
    }

    /// In each group with a sliding window: gives back the leading blocks no later token of
    /// `sequence` attends to (the next one, at position `computedTokens`, reads positions from
    /// `computedTokens - window + 1` on). They were registered with the prefix cache first, so
    /// a cached block keeps its contents until it is reused.
    private func releaseBlocksBehindWindow(_ sequence: ScheduledSequence) {
        let groups = limits.groupCount
        let registered = configuration.prefixCaching ? sequence.registeredBlocks : sequence.tableLength
        for (group, window) in limits.groupWindows.enumerated() where window > 0 {
            let behind = min(max(0, sequence.computedTokens - window + 1) / limits.kvBlockSize, registered, sequence.tableLength)
            let released = sequence.blocksBehindWindow[group]
            guard behind > released else { continue }
            blockManager.free((released..<behind).map { sequence.blocks[$0 * groups + group] })
            sequence.blocksBehindWindow[group] = behind
        }
    }

    /// The most blocks a sequence of `tokens` holds at once, computed `chunk` tokens at a time:
    /// in each group all of them, or with a window the ones the window and one chunk span (plus
    /// the partial blocks at both ends).
    private func peakBlocks(forTokens tokens: Int, chunk: Int) -> Int {
        let all = blockManager.blocksNeeded(forTokens: tokens)
        return limits.groupWindows.reduce(0) { sum, window in
            guard window > 0 else { return sum + all }
            return sum + min(all, blockManager.blocksNeeded(forTokens: window + min(chunk, limits.windowChunkLimit)) + 1)
        }
    }

    /// The longest prefix of `tokens` (all but the last) whose blocks every group has cached,
    /// group-interleaved, each with one more reference.
    private func acquireCachedPrefix(of tokens: [TokenID]) -> [Int] {
        let groups = limits.groupCount
        let found = (0..<groups).map {
            blockManager.acquireCachedPrefix(of: tokens, maxTokens: tokens.count - 1, group: $0)
        }
        let length = found.map(\.count).min() ?? 0
        for blocks in found where blocks.count > length { blockManager.free(Array(blocks[length...])) }
        return (0..<length * groups).map { found[$0 % groups][$0 / groups] }
    }

    /// Gives a running sequence's blocks back; it restarts from its cached prefix later.
    private func preempt(_ sequence: ScheduledSequence) {
        running.removeAll { $0 === sequence }
        blockManager.free(sequence.heldBlocks)
        sequence.blocks = []
        sequence.computedTokens = 0
        sequence.registeredBlocks = 0
        sequence.registeredChains = Array(repeating: 0, count: limits.groupCount)
        sequence.preemptions += 1
        preemptionCount += 1
        enqueue(sequence)
    }

    /// Puts `sequence` in the waiting queue where the policy says: FCFS by arrival (a preempted
    /// sequence arrived before everything still waiting), priority by (priority, arrival).
    private func enqueue(_ sequence: ScheduledSequence) {
        let key = queueKey(sequence)
        let position = waiting.firstIndex { queueKey($0) > key } ?? waiting.endIndex
        waiting.insert(sequence, at: position)
    }

    private func queueKey(_ sequence: ScheduledSequence) -> QueueKey {
        QueueKey(priority: configuration.policy == .priority ? sequence.request.priority : 0, arrival: sequence.arrival)
    }

    /// The running sequence that gives its blocks back when the cache is full: the last in the
    /// queue order.
    private func preemptionVictim() -> ScheduledSequence {
        running.max { queueKey($0) < queueKey($1) }!
    }

    // MARK: Results

    /// The request ids of a step's sequences (those still known), for log lines.
    public func requestIDs(of step: PlannedStep) -> [String] {
        step.entries.compactMap { sequences[$0.sequenceID]?.request.requestID }
    }

    /// Applies the workers' answer to the step in flight: advances computed counts, delivers
    /// tokens, finishes sequences. Returns the sequences the workers refused (request id, reason).
    @discardableResult
    public func complete(_ step: PlannedStep, result: Tessel_Wire_StepResult) -> [(requestID: String?, reason: String)] {
        var refusals: [(requestID: String?, reason: String)] = []
        let now = ContinuousClock.now
        inFlight = nil
        lastStepFailure = nil
        // A step of several decode passes counts as one of them (each costs about the same).
        costModel.observe(tokens: step.totalTokens, attended: step.attendedThousands,
                          seconds: result.computeSeconds / Double(step.decodePasses))
        var results: [UInt64: Tessel_Wire_SequenceResult] = [:]
        for entry in result.sequences { results[entry.sequenceID] = entry }
        for (position, entry) in step.entries.enumerated() {
            guard let sequence = sequences[entry.sequenceID] else { continue }
            if sequence.cancelled {
                retire(sequence)
                sequence.continuation.finish()
                continue
            }
            let outcome = results[entry.sequenceID]
            if let outcome, !outcome.error.isEmpty {
                // Refused alone: nothing of this step counts for it, and its batch-mates go on.
                refusals.append((sequence.request.requestID, outcome.error))
                retire(sequence)
                sequence.continuation.finish(throwing: GenerationError.sequenceRefused(outcome.error))
                continue
            }
            let sent = step.message.sequences[position]
            let start = sequence.computedTokens
            markComputed(sequence, tokens: entry.tokenCount)
            if sent.wantPromptLogprobs {
                recordPromptLogprobs(sequence, chunkStart: start, chunkLength: entry.tokenCount,
                                     entries: outcome?.promptLogprobs ?? [])
            }
            guard sent.sample else { continue }
            guard let outcome, outcome.sampled else {
                retire(sequence)
                sequence.continuation.finish(throwing: GenerationError.missingResult(sequenceID: sequence.id, stepID: step.message.stepID))
                continue
            }
            // The first pass's token, then those of the further decode passes: each of these
            // was computed by the pass after the one that sampled it.
            guard deliver(outcome.token, logprob: outcome.logprob, top: outcome.topLogprobs, to: sequence, at: now) else { continue }
            for following in outcome.followingTokens.prefix(max(0, Int(sent.decodeSteps) - 1)) {
                markComputed(sequence, tokens: 1)
                guard deliver(following.token, logprob: following.logprob, top: following.topLogprobs, to: sequence, at: now)
                else { break }
            }
        }
        return refusals
    }

    /// `tokens` more of `sequence`'s tokens have their KV in the cache: full blocks join the
    /// prefix cache, and blocks a sliding window has passed go back.
    private func markComputed(_ sequence: ScheduledSequence, tokens: Int) {
        sequence.computedTokens += tokens
        var registered = sequence.registeredBlocks
        for group in 0..<limits.groupCount {
            registered = blockManager.registerFullBlocks(
                sequence.blocks, group: group, of: limits.groupCount, tokens: sequence.tokens,
                computedTokens: sequence.computedTokens, alreadyRegistered: sequence.registeredBlocks,
                parentChain: &sequence.registeredChains[group])
        }
        sequence.registeredBlocks = registered
        releaseBlocksBehindWindow(sequence)
    }

    /// Hands a sampled token to its sequence's client and ends the sequence when it is its last.
    /// False when the sequence ended (finished, or the token broke its grammar).
    private func deliver(_ token: TokenID, logprob: Float, top: [Tessel_Wire_TokenLogprob],
                         to sequence: ScheduledSequence, at now: ContinuousClock.Instant) -> Bool {
        let wantsLogprobs = sequence.request.logprobs != nil
        let sampled = SampledToken(
            token: token,
            logprob: wantsLogprobs ? logprob : nil,
            topLogprobs: wantsLogprobs
                ? top.prefix(sequence.request.logprobs ?? 0).map { TokenLogprob(token: $0.token, logprob: $0.logprob) }
                : [])
        if let constraint = sequence.constraint, !constraint.accept(token) {
            // The worker sampled outside the mask it was sent: a bug, not the client's.
            retire(sequence)
            sequence.continuation.finish(throwing: GenerationError.sequenceRefused(
                "the workers sampled token \(token), which the structured-output grammar does not allow here"))
            return false
        }
        sequence.tokens.append(token)
        sequence.generatedCount += 1
        if let previous = sequence.lastTokenAt {
            metrics.nextToken(afterSeconds: (now - previous).timeInterval)
        } else {
            metrics.firstToken(afterSeconds: (now - sequence.arrivedAt).timeInterval, promptTokens: sequence.promptCount)
        }
        sequence.lastTokenAt = now
        sequence.continuation.yield(.token(sampled))
        guard let reason = finishReason(of: sequence, last: token) else { return true }
        metrics.finished(reason, afterSeconds: (now - sequence.arrivedAt).timeInterval)
        retire(sequence)
        sequence.continuation.yield(.finished(reason))
        sequence.continuation.finish()
        return false
    }

    /// Fails every sequence of the step in flight (the workers could not run it).
    public func fail(_ step: PlannedStep, error: GenerationError) {
        inFlight = nil
        lastStepFailure = error.description
        for entry in step.entries {
            guard let sequence = sequences[entry.sequenceID] else { continue }
            retire(sequence)
            if sequence.cancelled {
                sequence.continuation.finish()
            } else {
                sequence.continuation.finish(throwing: error)
            }
        }
    }

    private func finishReason(of sequence: ScheduledSequence, last token: TokenID) -> FinishReason? {
        if sequence.request.stopTokenIDs.contains(token) { return .stop }
        if sequence.constraint?.isFinished == true { return .stop }
        if sequence.generatedCount >= sequence.request.maxNewTokens { return .length }
        if sequence.tokens.count >= limits.maxContextLength { return .length }
        // The next token would need a block the cache can never give this sequence.
        if peakBlocks(forTokens: sequence.tokens.count + 1, chunk: 1) > limits.kvBlockCount { return .length }
        return nil
    }

    private func recordPromptLogprobs(_ sequence: ScheduledSequence, chunkStart: Int, chunkLength: Int,
                                      entries: [Tessel_Wire_ScoredToken]) {
        if sequence.promptLogprobs == nil {
            sequence.promptLogprobs = sequence.request.promptTokens.map { PromptTokenLogprob(token: $0, logprob: nil) }
        }
        let top = sequence.request.promptLogprobs ?? 0
        // One entry per chunk token after the sequence's first position; aligned at the chunk's end.
        let chunkEnd = min(chunkStart + chunkLength, sequence.promptCount)
        let firstPosition = chunkStart + chunkLength - entries.count
        for (offset, entry) in entries.enumerated() {
            let position = firstPosition + offset
            guard position >= 1, position < chunkEnd else { continue }
            sequence.promptLogprobs![position] = PromptTokenLogprob(
                token: sequence.tokens[position], logprob: entry.logprob,
                topLogprobs: entry.topLogprobs.prefix(top).map { TokenLogprob(token: $0.token, logprob: $0.logprob) })
        }
        if sequence.computedTokens >= sequence.promptCount, let logprobs = sequence.promptLogprobs {
            sequence.promptLogprobsDelivered = true
            sequence.continuation.yield(.promptLogprobs(logprobs))
        }
    }

    /// Removes a sequence from every queue and gives its blocks back.
    private func retire(_ sequence: ScheduledSequence) {
        guard sequences.removeValue(forKey: sequence.id) != nil else { return }
        running.removeAll { $0 === sequence }
        waiting.removeAll { $0 === sequence }
        blockManager.free(sequence.heldBlocks)
        sequence.blocks = []
        if sequence.everSent { pendingReleases.append(sequence.id) }
    }

    private func isInFlight(_ id: UInt64) -> Bool {
        inFlight?.entries.contains { $0.sequenceID == id } ?? false
    }
}
