import Testing
@testable import RouterCore
import Tokenizers
import Wire

private func prompt(_ count: Int, offset: Int = 0) -> [TokenID] {
    (0..<count).map { TokenID(UInt8(ascii: "A") + UInt8((offset + $0) % 26)) }
}

private func makeScheduler(_ runner: ScriptedStepRunner, maxSequences: Int = 16, budget: Int = 512,
                           prefixCaching: Bool = true, decodeSteps: Int = 1) -> Scheduler {
    Scheduler(configuration: SchedulerConfiguration(maxSequences: maxSequences, maxBatchedTokens: budget,
                                                    prefixCaching: prefixCaching, decodeSteps: decodeSteps),
              limits: SchedulerModelLimits(maxContextLength: runner.model.maxContextLength,
                                           kvBlockCount: runner.model.kvBlockCount, kvBlockSize: runner.model.kvBlockSize))
}

/// Plans and runs steps until nothing is left; returns the planned steps.
@discardableResult
private func runToCompletion(_ scheduler: Scheduler, _ runner: ScriptedStepRunner, limit: Int = 1000) async throws -> [PlannedStep] {
    var planned: [PlannedStep] = []
    while let step = await scheduler.planStep() {
        planned.append(step)
        let result = try await runner.run(step.message)
        await scheduler.complete(step, result: result)
        #expect(planned.count < limit)
        if planned.count >= limit { break }
    }
    return planned
}

/// The finished sequences the next step tells the workers of (a new request makes that step).
private func finishedOnNextStep(_ scheduler: Scheduler) async throws -> [UInt64] {
    _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(2), maxNewTokens: 1))
    return try #require(await scheduler.planStep()).message.finishedSequences
}

@Suite("Scheduler")
struct SchedulerTests {
    @Test("with a waiting bound, a sequence past it is refused with queueFull; admitted ones free room and all finish")
    func boundedQueue() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = Scheduler(
            configuration: SchedulerConfiguration(maxSequences: 1, maxBatchedTokens: 64, maxWaitingSequences: 2),
            limits: SchedulerModelLimits(maxContextLength: runner.model.maxContextLength,
                                         kvBlockCount: runner.model.kvBlockCount, kvBlockSize: runner.model.kvBlockSize))
        let first = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 2))
        let second = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 2))
        await #expect(throws: GenerationError.queueFull(limit: 2)) {
            try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 2))
        }
        // The first step admits one: there is room for one more.
        let step = try #require(await scheduler.planStep())
        await scheduler.complete(step, result: try await runner.run(step.message))
        let third = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 2))
        try await runToCompletion(scheduler, runner)
        for events in [first.events, second.events, third.events] {
            #expect(try await collectEvents(events).last == .finished(.length))
        }
    }

    @Test("a long prompt is prefilled in chunks no larger than the step budget; only the last chunk samples")
    func chunkedPrefill() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner, budget: 8)
        let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(20), maxNewTokens: 2))
        let steps = try await runToCompletion(scheduler, runner)
        let chunks = steps.map { $0.message.sequences.map(\.tokens.count) }
        #expect(chunks == [[8], [8], [4], [1]])
        #expect(steps.map { $0.message.sequences[0].sample } == [false, false, true, true])
        #expect(steps.map { $0.message.sequences[0].startPosition } == [0, 8, 16, 20])
        #expect(steps.allSatisfy { $0.totalTokens <= 8 })
        let collected = try await collectEvents(events)
        #expect(sampledTokens(collected) == [ScriptedStepRunner.token(atPosition: 20), ScriptedStepRunner.token(atPosition: 21)])
        #expect(collected.last == .finished(.length))
    }

    @Test("a sequence the worker refuses fails alone; its batch-mate in the same step carries on")
    func refusedSequenceFailsAlone() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner)
        let (refusedID, refused) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 3))
        let (_, honest) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(5, offset: 3), maxNewTokens: 3))
        let step = try #require(await scheduler.planStep())
        #expect(step.message.sequences.count == 2)
        var result = try await runner.run(step.message)
        let index = try #require(result.sequences.firstIndex { $0.sequenceID == refusedID })
        result.sequences[index].error = "sequence 1: temperature inf must be a finite number >= 0"
        result.sequences[index].sampled = false
        await scheduler.complete(step, result: result)
        try await runToCompletion(scheduler, runner)
        await #expect(throws: GenerationError.sequenceRefused("sequence 1: temperature inf must be a finite number >= 0")) {
            _ = try await collectEvents(refused)
        }
        let events = try await collectEvents(honest)
        #expect(sampledTokens(events) == (5..<8).map { ScriptedStepRunner.token(atPosition: $0) })
        #expect(await scheduler.isIdle)
    }

    @Test("a step mixes the decode token of a running sequence with a prefill chunk of a new one")
    func mixedStep() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner, budget: 8)
        _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 5))
        let first = try #require(await scheduler.planStep())
        await scheduler.complete(first, result: try await runner.run(first.message))
        _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(20), maxNewTokens: 5))
        let second = try #require(await scheduler.planStep())
        #expect(second.message.sequences.map(\.tokens.count) == [1, 7])
        #expect(second.decodeCount == 1)
        #expect(second.prefillTokenCount == 7)
        #expect(second.message.sequences[0].sample)
        #expect(!second.message.sequences[1].sample)
    }

    @Test("block tables cover exactly the positions computed so far, each step sending only the new ids")
    func blockTables() async throws {
        let runner = ScriptedStepRunner(blockSize: 4)
        let scheduler = makeScheduler(runner, budget: 6)
        _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(10), maxNewTokens: 3))
        let steps = try await runToCompletion(scheduler, runner)
        var held: [UInt32] = []
        for (index, step) in steps.enumerated() {
            let entry = step.message.sequences[0]
            #expect(entry.continues == (index > 0))
            held += entry.blockTable
            let end = Int(entry.startPosition) + entry.tokens.count
            #expect(held.count == (end + 3) / 4)
        }
        #expect(Set(held).count == held.count)
    }

    @Test("out of KV blocks, the newest sequence is preempted, recomputed later, and both outputs stay right")
    func preemption() async throws {
        // 6 blocks of 4 slots; each sequence grows to 8 + 10 = 18 tokens (5 blocks).
        let runner = ScriptedStepRunner(blockCount: 6, blockSize: 4)
        let scheduler = makeScheduler(runner, budget: 64)
        let (_, first) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(8), maxNewTokens: 10))
        let (_, second) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(8, offset: 3), maxNewTokens: 10))
        try await runToCompletion(scheduler, runner)
        let expected = (8..<18).map { ScriptedStepRunner.token(atPosition: $0) }
        #expect(sampledTokens(try await collectEvents(first)) == expected)
        #expect(sampledTokens(try await collectEvents(second)) == expected)
        let statistics = await scheduler.statistics
        #expect(statistics.preemptions >= 1)
        #expect(statistics.usedBlocks == 0)
        #expect(statistics.running == 0 && statistics.waiting == 0)
        // No step ever referenced more blocks than exist.
        for step in runner.steps {
            let used = Set(step.sequences.flatMap(\.blockTable))
            #expect(used.count <= 6)
        }
    }

    @Test("sequences never share a block they write to")
    func noSharedWrites() async throws {
        let runner = ScriptedStepRunner(blockCount: 32, blockSize: 4)
        let scheduler = makeScheduler(runner, budget: 16)
        for index in 0..<4 {
            _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(6, offset: index), maxNewTokens: 6))
        }
        try await runToCompletion(scheduler, runner)
        for step in runner.steps {
            var written: [UInt32: UInt64] = [:]
            for entry in step.sequences {
                let first = Int(entry.startPosition) / 4
                let last = (Int(entry.startPosition) + entry.tokens.count - 1) / 4
                for index in first...last {
                    let block = entry.blockTable[index]
                    #expect(written[block] == nil, "block \(block) written by two sequences in one step")
                    written[block] = entry.sequenceID
                }
            }
        }
    }

    @Test("the step's sequence count never exceeds max-num-seqs")
    func maxSequences() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner, maxSequences: 3)
        for index in 0..<7 {
            _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3, offset: index), maxNewTokens: 4))
        }
        let steps = try await runToCompletion(scheduler, runner)
        #expect(steps.allSatisfy { $0.message.sequences.count <= 3 })
        #expect(Set(steps.flatMap { $0.message.sequences.map(\.sequenceID) }).count == 7)
    }

    @Test("a stop token ends the sequence with finish reason stop and frees its blocks")
    func stopToken() async throws {
        let runner = ScriptedStepRunner(eosAtPosition: 7)
        let scheduler = makeScheduler(runner)
        let (id, events) = try await scheduler.submit(
            SequenceRequest(promptTokens: prompt(5), maxNewTokens: 50, stopTokenIDs: [ByteTokenizer.eos]))
        try await runToCompletion(scheduler, runner)
        let collected = try await collectEvents(events)
        #expect(sampledTokens(collected) == [ScriptedStepRunner.token(atPosition: 5), ScriptedStepRunner.token(atPosition: 6), ByteTokenizer.eos])
        #expect(collected.last == .finished(.stop))
        #expect(await scheduler.statistics.usedBlocks == 0)
        #expect(try await finishedOnNextStep(scheduler) == [id])
    }

    @Test("the context length ends a sequence with length")
    func contextLimit() async throws {
        let runner = ScriptedStepRunner(contextLength: 12)
        let scheduler = makeScheduler(runner)
        let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(9), maxNewTokens: 100))
        try await runToCompletion(scheduler, runner)
        let collected = try await collectEvents(events)
        #expect(sampledTokens(collected).count == 3)
        #expect(collected.last == .finished(.length))
    }

    @Test("cancelling a queued or running sequence frees its blocks and ends its stream")
    func cancellation() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner, budget: 4)
        let (running, runningEvents) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(12), maxNewTokens: 5))
        let step = try #require(await scheduler.planStep())
        await scheduler.complete(step, result: try await runner.run(step.message))
        #expect(await scheduler.statistics.usedBlocks > 0)
        await scheduler.cancel(running)
        #expect(await scheduler.statistics.usedBlocks == 0)
        #expect(try await collectEvents(runningEvents).isEmpty)
        #expect(await scheduler.planStep() == nil)
        #expect(try await finishedOnNextStep(scheduler) == [running])
    }

    @Test("a sequence cancelled while its step runs is dropped when the step returns")
    func cancelInFlight() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner)
        let (id, events) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 5))
        let step = try #require(await scheduler.planStep())
        await scheduler.cancel(id)
        #expect(await scheduler.statistics.usedBlocks > 0)
        await scheduler.complete(step, result: try await runner.run(step.message))
        #expect(await scheduler.statistics.usedBlocks == 0)
        #expect(try await collectEvents(events).isEmpty)
    }

    @Test("dropping a sequence's event stream cancels it")
    func droppedStream() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner)
        do {
            let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 5))
            _ = events
        }
        for _ in 0..<100 where await scheduler.statistics.waiting > 0 { await Task.yield() }
        #expect(await scheduler.statistics.waiting == 0)
    }

    @Test("a failed step fails exactly its sequences with the worker's error; others go on")
    func stepFailure() async throws {
        let runner = ScriptedStepRunner(failingSteps: [1])
        let scheduler = makeScheduler(runner, budget: 4)
        let (_, doomed) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 3))
        let loop = StepLoop(scheduler: scheduler, runner: runner)
        let task = Task { try await loop.run() }
        defer { task.cancel() }
        await #expect(throws: GenerationError.self) { _ = try await collectEvents(doomed) }
        do {
            _ = try await collectEvents(doomed)
        } catch let error as GenerationError {
            guard case .stepFailed(let message) = error else { Issue.record("unexpected \(error)"); return }
            #expect(message.contains("scripted failure of step 1"))
        }
        #expect(await scheduler.lastStepFailure != nil)
        let (_, healthy) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 3))
        #expect(sampledTokens(try await collectEvents(healthy)).count == 3)
        #expect(await scheduler.lastStepFailure == nil)
        #expect(await scheduler.statistics.usedBlocks == 0)
    }

    @Test("8 simultaneous requests through the step loop all complete with their own outputs")
    func eightConcurrentRequests() async throws {
        let runner = ScriptedStepRunner(blockCount: 24, blockSize: 4, delay: .milliseconds(1))
        let scheduler = makeScheduler(runner, maxSequences: 8, budget: 16)
        let loop = StepLoop(scheduler: scheduler, runner: runner)
        let task = Task { try await loop.run() }
        defer { task.cancel() }
        let outputs = try await withThrowingTaskGroup(of: (Int, [TokenID]).self) { group in
            for index in 0..<8 {
                group.addTask {
                    let (_, events) = try await scheduler.submit(
                        SequenceRequest(promptTokens: prompt(5 + index, offset: index), maxNewTokens: 6 + index))
                    return (index, sampledTokens(try await collectEvents(events)))
                }
            }
            var outputs: [Int: [TokenID]] = [:]
            for try await (index, tokens) in group { outputs[index] = tokens }
            return outputs
        }
        for index in 0..<8 {
            let start = 5 + index
            #expect(outputs[index] == (start..<start + 6 + index).map { ScriptedStepRunner.token(atPosition: $0) })
        }
        #expect(runner.steps.contains { $0.sequences.count > 1 }, "requests were batched together")
        #expect(await scheduler.statistics.usedBlocks == 0)
        // Finished sequences ride on the next step: one more request carries the last of them.
        _ = try await collectEvents(try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 1)).1)
        #expect(Set(runner.released).count == 8)
    }

    @Test("a repeated prompt starts at its cached full-block length")
    func prefixCacheHit() async throws {
        let runner = ScriptedStepRunner(blockSize: 4)
        let scheduler = makeScheduler(runner)
        let tokens = prompt(13)
        _ = try await scheduler.submit(SequenceRequest(promptTokens: tokens, maxNewTokens: 2))
        try await runToCompletion(scheduler, runner)
        let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: tokens, maxNewTokens: 2))
        let steps = try await runToCompletion(scheduler, runner)
        #expect(steps.first?.message.sequences.first?.startPosition == 12)
        #expect(steps.first?.message.sequences.first?.tokens.count == 1)
        #expect(sampledTokens(try await collectEvents(events)) == [ScriptedStepRunner.token(atPosition: 13), ScriptedStepRunner.token(atPosition: 14)])
        #expect(await scheduler.statistics.prefixCacheHitTokens == 12)

        // With the cache off, the whole prompt is computed again.
        let cold = makeScheduler(runner, prefixCaching: false)
        _ = try await cold.submit(SequenceRequest(promptTokens: tokens, maxNewTokens: 1))
        try await runToCompletion(cold, runner)
        _ = try await cold.submit(SequenceRequest(promptTokens: tokens, maxNewTokens: 1))
        let coldSteps = try await runToCompletion(cold, runner)
        #expect(coldSteps.first?.message.sequences.first?.startPosition == 0)
    }

    @Test("prompt logprobs cover every prompt token across chunks, the first one null")
    func promptLogprobs() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner, budget: 4)
        let tokens = prompt(10)
        let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: tokens, maxNewTokens: 1, promptLogprobs: 1))
        try await runToCompletion(scheduler, runner)
        let collected = try await collectEvents(events)
        guard case .promptLogprobs(let entries) = collected.first else { Issue.record("no prompt logprobs first"); return }
        #expect(entries.map(\.token) == tokens)
        #expect(entries[0].logprob == nil)
        #expect(entries.dropFirst().map(\.logprob) == (1..<10).map { -Float($0) })
        #expect(entries[5].topLogprobs == [TokenLogprob(token: TokenID(UInt8(ascii: "z")), logprob: -0.25)])
    }

    @Test("a prompt longer than the context is refused at submission")
    func tooLong() async throws {
        let runner = ScriptedStepRunner(contextLength: 16)
        let scheduler = makeScheduler(runner)
        await #expect(throws: GenerationError.self) {
            _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(16), maxNewTokens: 1))
        }
    }

    @Test("a decode step's size does not grow with the context, penalties and all")
    func decodeStepSize() async throws {
        let runner = ScriptedStepRunner(contextLength: 4096, blockCount: 512, blockSize: 4)
        let scheduler = makeScheduler(runner, budget: 4096)
        let sampling = SamplingParameters(repetitionPenalty: 1.1, presencePenalty: 0.5)
        _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(2000), sampling: sampling, maxNewTokens: 40))
        let steps = try await runToCompletion(scheduler, runner)
        let sizes = try steps.map { try $0.message.serializedData().count }
        #expect(sizes[0] > 2000)  // the first step carries the prompt and its 500 blocks
        let decodes = sizes.dropFirst()
        #expect(decodes.count == 39)
        #expect(decodes.max()! < 64, "decode steps: \(decodes)")
        #expect(decodes.max()! - decodes.min()! <= 4, "decode steps: \(decodes)")
    }

    @Test("a repetition penalty's prompt and any penalty's output go to the workers once each, else neither")
    func penaltyContext() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner)
        let penalised = SequenceRequest(promptTokens: prompt(3), sampling: SamplingParameters(repetitionPenalty: 1.1), maxNewTokens: 3)
        let plain = SequenceRequest(promptTokens: prompt(3), sampling: SamplingParameters(presencePenalty: 0.5), maxNewTokens: 3)
        let (penalisedID, _) = try await scheduler.submit(penalised)
        let (plainID, _) = try await scheduler.submit(plain)
        let entries = try await runToCompletion(scheduler, runner).flatMap(\.message.sequences)
        let penalisedEntries = entries.filter { $0.sequenceID == penalisedID }
        let plainEntries = entries.filter { $0.sequenceID == plainID }
        #expect(penalisedEntries.count == 3 && plainEntries.count == 3)
        // The prompt with the sequence's first step; later steps continue what the workers hold.
        #expect(penalisedEntries.map(\.promptTokens) == [prompt(3), [], []])
        #expect(penalisedEntries.map(\.continues) == [false, true, true])
        #expect(plainEntries.allSatisfy { $0.promptTokens.isEmpty })
        // Each generated token once, on the step after it was sampled (where it is the input).
        #expect(plainEntries.map(\.generatedTokens) == [[], [plainEntries[1].tokens[0]], [plainEntries[2].tokens[0]]])
    }

    @Test("a constrained sequence sends a mask with each sampling step, follows it, and stops when the constraint is done")
    func constrainedOutput() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner, budget: 2)  // the prompt's chunks sample nothing and carry no mask
        let word: [TokenID] = Array("json".utf8).map(TokenID.init)
        let constraint = OutputConstraint(description: "the word json") { SpellingConstraint(word: word) }
        let request = SequenceRequest(promptTokens: prompt(5), maxNewTokens: 50, constraint: constraint)
        let (_, events) = try await scheduler.submit(request)
        let (_, free) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(2), maxNewTokens: 2))
        let entries = try await runToCompletion(scheduler, runner).flatMap(\.message.sequences)
        let tokens = try await collectEvents(events).compactMap { event -> TokenID? in
            if case .token(let sampled) = event { return sampled.token }
            return nil
        }
        #expect(tokens == word)
        #expect(try await collectEvents(free).last == .finished(.length))
        let constrained = entries.filter { $0.sequenceID == 1 }
        #expect(constrained.filter(\.sample).count == word.count)
        #expect(constrained.allSatisfy { $0.sample == !$0.allowedTokens.isEmpty })
        #expect(entries.filter { $0.sequenceID != 1 }.allSatisfy { $0.allowedTokens.isEmpty })
    }

    @Test("a token the constraint refuses fails its sequence alone, with an error saying so")
    func constraintRefusal() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner)
        let constraint = OutputConstraint(description: "refuses all") { SpellingConstraint(word: [], refuse: true) }
        let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 5, constraint: constraint))
        let (_, other) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 2))
        try await runToCompletion(scheduler, runner)
        await #expect(throws: GenerationError.self) { _ = try await collectEvents(events) }
        #expect(try await collectEvents(other).last == .finished(.length))
    }

    @Test("a top_k beyond Int32 is sent to the workers clamped, not trapped on")
    func hugeTopK() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner)
        let request = SequenceRequest(promptTokens: prompt(3), sampling: SamplingParameters(topK: 10_000_000_000),
                                      maxNewTokens: 1)
        let (_, events) = try await scheduler.submit(request)
        let steps = try await runToCompletion(scheduler, runner)
        #expect(steps.first?.message.sequences.first?.sampling.topK == Int32.max)
        #expect(try await collectEvents(events).last == .finished(.length))
    }

    @Test("several decode passes per step give the tokens single steps give, never past max_tokens, in fewer steps")
    func multiStepDecode() async throws {
        var outputs: [[[TokenID]]] = []
        var stepCounts: [Int] = []
        for passes in [1, 4] {
            let runner = ScriptedStepRunner()
            let scheduler = makeScheduler(runner, decodeSteps: passes)
            let (_, long) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(5), maxNewTokens: 10))
            let (_, short) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 3))
            let steps = try await runToCompletion(scheduler, runner)
            let events = [try await collectEvents(long), try await collectEvents(short)]
            #expect(events.map(\.last) == [.finished(.length), .finished(.length)])
            outputs.append(events.map(sampledTokens))
            stepCounts.append(steps.count)
            #expect(await scheduler.statistics.usedBlocks == 0)
            let passesAsked = steps.map { $0.message.sequences.map { max(1, Int($0.decodeSteps)) } }
            if passes == 4 {
                // The prompts' step samples one token each; then 4 passes, capped by what is left.
                #expect(passesAsked == [[1, 1], [4, 2], [4], [1]], "\(passesAsked)")
                #expect(steps.map(\.decodePasses) == [1, 4, 4, 1])
            }
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0][0] == (5..<15).map(ScriptedStepRunner.token(atPosition:)))
        #expect(stepCounts == [10, 4])
    }

    @Test("a stop token sampled by a middle decode pass ends the sequence there; the later passes' tokens are dropped")
    func multiStepStopToken() async throws {
        let runner = ScriptedStepRunner(eosAtPosition: 8)
        let scheduler = makeScheduler(runner, decodeSteps: 8)
        let (id, events) = try await scheduler.submit(
            SequenceRequest(promptTokens: prompt(5), maxNewTokens: 50, stopTokenIDs: [ByteTokenizer.eos]))
        let steps = try await runToCompletion(scheduler, runner)
        #expect(steps.count == 2)
        #expect(steps.last?.message.sequences.first?.decodeSteps == 8)
        let collected = try await collectEvents(events)
        #expect(sampledTokens(collected) == (5..<8).map(ScriptedStepRunner.token(atPosition:)) + [ByteTokenizer.eos])
        #expect(collected.last == .finished(.stop))
        #expect(await scheduler.statistics.usedBlocks == 0)
        #expect(try await finishedOnNextStep(scheduler) == [id])
    }

    @Test("one decode pass per step while a sequence waits or prefills, or one follows a grammar")
    func multiStepOnlyWhenAllDecode() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner, budget: 4, decodeSteps: 4)
        _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 20))
        let first = try #require(await scheduler.planStep())
        await scheduler.complete(first, result: try await runner.run(first.message))
        // A long prompt arrives: its chunks share steps with the decode, one pass each.
        _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(10), maxNewTokens: 2))
        var steps: [Tessel_Wire_Step] = []
        while let step = await scheduler.planStep() {
            steps.append(step.message)
            await scheduler.complete(step, result: try await runner.run(step.message))
        }
        let prefilling = steps.filter { $0.sequences.contains { $0.sequenceID == 2 && $0.startPosition < 10 } }
        #expect(prefilling.count >= 3)
        #expect(prefilling.allSatisfy { $0.sequences.allSatisfy { $0.decodeSteps == 0 } })
        #expect(steps.last?.sequences.map(\.sequenceID) == [1])
        #expect(steps.contains { $0.sequences.map(\.decodeSteps) == [4] })

        // While a sequence waits (here for a place among --max-num-seqs 1), one pass a step.
        let full = makeScheduler(runner, maxSequences: 1, decodeSteps: 4)
        _ = try await full.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 6))
        _ = try await full.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 6))
        let queued = try await runToCompletion(full, runner)
        let firstOnly = queued.prefix { $0.message.sequences.allSatisfy { $0.sequenceID == 1 } }
        #expect(firstOnly.count == 6 && firstOnly.allSatisfy { $0.decodePasses == 1 })
        #expect(queued.count == 6 + 3)  // the second alone: its prompt's step, then 4 and 1 passes

        let word: [TokenID] = Array("json".utf8).map(TokenID.init)
        let constraint = OutputConstraint(description: "the word json") { SpellingConstraint(word: word) }
        let constrained = makeScheduler(runner, decodeSteps: 4)
        let (_, events) = try await constrained.submit(SequenceRequest(promptTokens: prompt(5), maxNewTokens: 50, constraint: constraint))
        _ = try await constrained.submit(SequenceRequest(promptTokens: prompt(2), maxNewTokens: 8))
        let constrainedRun = try await runToCompletion(constrained, runner)
        #expect(try await collectEvents(events).compactMap { event -> TokenID? in
            if case .token(let sampled) = event { return sampled.token }
            return nil
        } == word)
        // Passes only once the constrained sequence is done.
        let constrainedSteps = constrainedRun.prefix { $0.message.sequences.contains { $0.sequenceID == 1 } }
        #expect(constrainedSteps.allSatisfy { $0.decodePasses == 1 })
        #expect(constrainedRun.contains { $0.decodePasses > 1 })
    }

    @Test("the tokens later decode passes computed join the prefix cache")
    func multiStepPrefixCache() async throws {
        let runner = ScriptedStepRunner(blockSize: 4)
        let scheduler = makeScheduler(runner, decodeSteps: 4)
        let tokens = prompt(13)
        let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: tokens, maxNewTokens: 8))
        try await runToCompletion(scheduler, runner)
        let generated = sampledTokens(try await collectEvents(events))
        #expect(generated.count == 8)
        // 13 + 7 tokens were computed (the last one sampled never is): 5 full blocks.
        _ = try await scheduler.submit(SequenceRequest(promptTokens: tokens + generated, maxNewTokens: 1))
        let steps = try await runToCompletion(scheduler, runner)
        #expect(steps.first?.message.sequences.first?.startPosition == 20)
    }

    @Test("after a graceful stop the scheduler refuses new sequences")
    func draining() async throws {
        let runner = ScriptedStepRunner()
        let scheduler = makeScheduler(runner)
        await scheduler.stopAccepting()
        await #expect(throws: GenerationError.shuttingDown) {
            _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(3), maxNewTokens: 1))
        }
    }
}

import Logging
import ServiceLifecycle

/// Step costs as a worker might report them: 2 ms + 0.3 ms per token + 0.1 ms per thousand
/// attended positions.
private func syntheticSeconds(_ step: PlannedStep) -> Double {
    0.002 + 0.0003 * Double(step.totalTokens) + 0.0001 * step.attendedThousands
}

@Suite("Step time and priority")
struct StepTimeAndPriorityTests {
    @Test("the step cost model recovers the coefficients of the steps it observed")
    func costModelFit() {
        var model = StepCostModel()
        #expect(model.cost(start: 0, tokens: 10) == nil)
        for (tokens, start) in [(1, 100), (512, 0), (64, 2000), (3, 50), (256, 1024), (1, 4000), (128, 300), (17, 9)] {
            let attended = StepCostModel.attended(start: start, tokens: tokens)
            model.observe(tokens: tokens, attended: attended, seconds: 0.002 + 0.0003 * Double(tokens) + 0.0001 * attended)
        }
        let (c0, c1, c2) = try! #require(model.coefficients)
        #expect(abs(c0 - 0.002) < 1e-6 && abs(c1 - 0.0003) < 1e-7 && abs(c2 - 0.0001) < 1e-7)
        // The largest chunk within 0.1 s at position 3000 costs at most that, one more token more.
        let fitting = try! #require(model.tokens(fitting: 0.1, start: 3000))
        #expect(model.cost(start: 3000, tokens: fitting)! <= 0.1)
        #expect(model.cost(start: 3000, tokens: fitting + 1)! > 0.1)
    }

    @Test("with a learned step cost, a long prompt advances in steps near the target and a short prompt arriving meanwhile gets its first token in the next step")
    func longPromptDoesNotHoldBackAShortOne() async throws {
        let runner = ScriptedStepRunner(contextLength: 8192, blockCount: 2100, blockSize: 4)
        let scheduler = Scheduler(
            configuration: SchedulerConfiguration(maxBatchedTokens: 512, targetStepSeconds: 0.05),
            limits: SchedulerModelLimits(maxContextLength: 8192, kvBlockCount: 2100, kvBlockSize: 4))
        func run(_ step: PlannedStep) async throws {
            var result = try await runner.run(step.message)
            result.computeSeconds = syntheticSeconds(step)
            await scheduler.complete(step, result: result)
        }
        // Teach the model with a few short requests first.
        for offset in 0..<4 {
            _ = try await scheduler.submit(SequenceRequest(promptTokens: prompt(40 + 30 * offset, offset: offset), maxNewTokens: 3))
            while let step = await scheduler.planStep() { try await run(step) }
        }
        let (_, long) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(6000, offset: 7), maxNewTokens: 1))
        var longSteps: [PlannedStep] = []
        for _ in 0..<6 {
            let step = try #require(await scheduler.planStep())
            longSteps.append(step)
            try await run(step)
        }
        // Chunks keep each step within ~the target (the model is exact here), shrinking as the context grows.
        for step in longSteps { #expect(syntheticSeconds(step) <= 0.05 * 1.01, "\(step.totalTokens) tokens") }
        let chunks = longSteps.map(\.totalTokens)
        #expect(chunks.first! > chunks.last!)
        // A short prompt arrives: the very next step finishes its prefill and samples.
        let (shortID, short) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(20, offset: 3), maxNewTokens: 1))
        let next = try #require(await scheduler.planStep())
        let entry = try #require(next.message.sequences.first { $0.sequenceID == shortID })
        #expect(Int(entry.startPosition) + entry.tokens.count == 20 && entry.sample)
        // The long prompt still advances in that step, by the minimum chunk.
        #expect(next.message.sequences.contains { $0.sequenceID != shortID && $0.tokens.count == 16 })
        try await run(next)
        #expect(sampledTokens(try await collectEvents(short)).count == 1)
        while let step = await scheduler.planStep() { try await run(step) }
        #expect(sampledTokens(try await collectEvents(long)) == [ScriptedStepRunner.token(atPosition: 6000)])
    }

    @Test("priority policy: waiting sequences run by priority then arrival; fcfs keeps arrival order")
    func priorityOrder() async throws {
        for policy in SchedulingPolicy.allCases {
            let runner = ScriptedStepRunner()
            let scheduler = Scheduler(configuration: SchedulerConfiguration(maxSequences: 1, policy: policy),
                                      limits: SchedulerModelLimits(maxContextLength: 256, kvBlockCount: 64, kvBlockSize: 4))
            var ids: [Int: UInt64] = [:]
            for priority in [5, 0, 9, -2, 0] {
                let (id, _) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(4), maxNewTokens: 1, priority: priority))
                ids[ids.count] = id
            }
            var order: [UInt64] = []
            while let step = await scheduler.planStep() {
                for entry in step.message.sequences where !order.contains(entry.sequenceID) { order.append(entry.sequenceID) }
                await scheduler.complete(step, result: try await runner.run(step.message))
            }
            let expected = policy == .priority ? [3, 1, 4, 0, 2] : [0, 1, 2, 3, 4]
            #expect(order == expected.map { ids[$0]! }, "\(policy)")
        }
    }

    @Test("out of KV blocks, fcfs preempts the newest sequence, priority the one with the highest priority value")
    func priorityPreemption() async throws {
        for policy in SchedulingPolicy.allCases {
            // 6 blocks of 4 slots; each sequence grows to 8 + 10 = 18 tokens (5 blocks): one must give way.
            let runner = ScriptedStepRunner(blockCount: 6, blockSize: 4)
            let scheduler = Scheduler(configuration: SchedulerConfiguration(maxBatchedTokens: 64, policy: policy),
                                      limits: SchedulerModelLimits(maxContextLength: 256, kvBlockCount: 6, kvBlockSize: 4))
            let (olderID, older) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(8), maxNewTokens: 10, priority: 3))
            let (newerID, newer) = try await scheduler.submit(SequenceRequest(promptTokens: prompt(8, offset: 3), maxNewTokens: 10,
                                                                               priority: policy == .priority ? 0 : 3))
            var alone: UInt64?
            while let step = await scheduler.planStep() {
                await scheduler.complete(step, result: try await runner.run(step.message))
                let ids = step.message.sequences.map(\.sequenceID)
                if alone == nil, ids.count == 1, await scheduler.statistics.preemptions > 0 { alone = ids[0] }
            }
            _ = try await collectEvents(older)
            _ = try await collectEvents(newer)
            #expect(await scheduler.statistics.preemptions >= 1)
            // The one not preempted ran on alone.
            #expect(alone == (policy == .priority ? newerID : olderID), "\(policy)")
        }
    }
}

@Suite("Scheduler with a sliding window on every layer")
struct SlidingWindowSchedulerTests {
    /// 8 blocks of 4 slots (32 tokens), every layer attending over the last 8 positions.
    func scheduler(prefixCaching: Bool) -> (Scheduler, ScriptedStepRunner) {
        let runner = ScriptedStepRunner(blockCount: 8, blockSize: 4)
        let scheduler = Scheduler(configuration: SchedulerConfiguration(maxBatchedTokens: 16, prefixCaching: prefixCaching),
                                  limits: SchedulerModelLimits(maxContextLength: 256, kvBlockCount: 8, kvBlockSize: 4,
                                                               groupWindows: [8]))
        return (scheduler, runner)
    }

    @Test("blocks the window has passed go back: two sequences each longer than the whole cache finish without preemption, never sharing a block their windows read", arguments: [false, true])
    func longerThanTheCache(prefixCaching: Bool) async throws {
        let (scheduler, runner) = scheduler(prefixCaching: prefixCaching)
        let a = try await scheduler.submit(SequenceRequest(promptTokens: prompt(12), maxNewTokens: 60))
        let b = try await scheduler.submit(SequenceRequest(promptTokens: prompt(12, offset: 5), maxNewTokens: 60))
        try await runToCompletion(scheduler, runner)
        for events in [a.events, b.events] {
            let all = try await collectEvents(events)
            #expect(all.filter { if case .token = $0 { true } else { false } }.count == 60)
            #expect(all.last == .finished(.length))
        }
        #expect(await scheduler.statistics.preemptions == 0)
        #expect(await scheduler.statistics.usedBlocks == 0)
        // In every step, the blocks each sequence's window reads belong to it alone.
        for step in runner.steps {
            var owner: [UInt32: UInt64] = [:]
            for entry in step.sequences {
                let start = Int(entry.startPosition), end = start + entry.tokens.count
                let first = max(0, start - 8 + 1) / 4, last = (end - 1) / 4
                for block in entry.blockTable[first...last] {
                    #expect(owner[block] == nil || owner[block] == entry.sequenceID, "block \(block) read by two sequences")
                    owner[block] = entry.sequenceID
                }
            }
        }
    }

    @Test("a prompt longer than the whole cache is admitted and prefilled a chunk at a time", arguments: [false, true])
    func promptLongerThanTheCache(prefixCaching: Bool) async throws {
        let (scheduler, runner) = scheduler(prefixCaching: prefixCaching)
        let a = try await scheduler.submit(SequenceRequest(promptTokens: prompt(40), maxNewTokens: 30))
        try await runToCompletion(scheduler, runner)
        let all = try await collectEvents(a.events)
        #expect(all.filter { if case .token = $0 { true } else { false } }.count == 30)
        #expect(runner.steps.allSatisfy { $0.sequences.allSatisfy { $0.tokens.count <= 16 } })
        #expect(await scheduler.statistics.usedBlocks == 0)
    }

    @Test("without a window the same sequence stops at the cache's capacity")
    func withoutWindow() async throws {
        let runner = ScriptedStepRunner(blockCount: 8, blockSize: 4)
        let scheduler = Scheduler(configuration: SchedulerConfiguration(maxBatchedTokens: 16),
                                  limits: SchedulerModelLimits(maxContextLength: 256, kvBlockCount: 8, kvBlockSize: 4))
        let a = try await scheduler.submit(SequenceRequest(promptTokens: prompt(12), maxNewTokens: 60))
        try await runToCompletion(scheduler, runner)
        let all = try await collectEvents(a.events)
        #expect(all.filter { if case .token = $0 { true } else { false } }.count == 32 - 12)
    }
}

@Suite("Scheduler with KV groups of sliding-window and full layers (Gemma)")
struct KVGroupSchedulerTests {
    /// 28 blocks of 4 slots in two groups: group 0's layers attend over 8 positions, group 1's
    /// over the whole context.
    func run(windows: [Int], prefixCaching: Bool = true, prompts: [[TokenID]], maxNewTokens: Int) async throws
        -> (Scheduler, ScriptedStepRunner, [[SequenceEvent]]) {
        let runner = ScriptedStepRunner(blockCount: 28, blockSize: 4)
        let scheduler = Scheduler(configuration: SchedulerConfiguration(maxBatchedTokens: 16, prefixCaching: prefixCaching),
                                  limits: SchedulerModelLimits(maxContextLength: 256, kvBlockCount: 28, kvBlockSize: 4,
                                                               groupWindows: windows))
        var streams: [AsyncThrowingStream<SequenceEvent, any Error>] = []
        for prompt in prompts {
            streams.append(try await scheduler.submit(SequenceRequest(promptTokens: prompt, maxNewTokens: maxNewTokens)).events)
        }
        try await runToCompletion(scheduler, runner)
        var events: [[SequenceEvent]] = []
        for stream in streams { events.append(try await collectEvents(stream)) }
        return (scheduler, runner, events)
    }

    @Test("the sliding group gives back what its window passed: two 40-token sequences fit 28 blocks at once, where two full groups need 40", arguments: [false, true])
    func slidingGroupFreesItsBlocks(prefixCaching: Bool) async throws {
        let prompts = [prompt(12), prompt(12, offset: 5)]
        let (scheduler, runner, events) = try await run(windows: [8, 0], prefixCaching: prefixCaching, prompts: prompts,
                                                        maxNewTokens: 28)
        for all in events { #expect(all.filter { if case .token = $0 { true } else { false } }.count == 28) }
        #expect(await scheduler.statistics.preemptions == 0)
        #expect(await scheduler.statistics.usedBlocks == 0)
        for step in runner.steps {
            var owner: [UInt32: UInt64] = [:]
            for entry in step.sequences {
                #expect(entry.blockTable.count % 2 == 0)
                let start = Int(entry.startPosition), end = start + entry.tokens.count
                // Group 0 reads its window's blocks, group 1 every block: none shared between sequences.
                let windowStart = max(0, start - 8 + 1) / 4
                for block in 0...(end - 1) / 4 {
                    for group in block >= windowStart ? [0, 1] : [1] {
                        let id = entry.blockTable[block * 2 + group]
                        #expect(owner[id] == nil || owner[id] == entry.sequenceID, "block \(id) read by two sequences")
                        owner[id] = entry.sequenceID
                    }
                }
            }
        }
        let (full, _, _) = try await run(windows: [0, 0], prompts: prompts, maxNewTokens: 28)
        #expect(await full.statistics.preemptions > 0)
    }

    @Test("a prefix hit needs the prefix cached in every group")
    func prefixHitInEveryGroup() async throws {
        let shared = prompt(20)
        let (scheduler, runner, _) = try await run(windows: [8, 0], prompts: [shared], maxNewTokens: 2)
        // The same prompt again, on the same scheduler: its first four blocks are cached in both groups.
        let again = try await scheduler.submit(SequenceRequest(promptTokens: shared, maxNewTokens: 2))
        try await runToCompletion(scheduler, runner)
        let events = try await collectEvents(again.events)
        #expect(events.contains(.prefixCacheHit(tokens: 16)))
        // Its first step computes from position 16 on, with both groups' four cached blocks.
        let first = try #require(runner.steps.first(where: { $0.sequences.contains { $0.sequenceID == again.id } }))
        let entry = try #require(first.sequences.first { $0.sequenceID == again.id })
        #expect(entry.startPosition == 16 && entry.blockTable.count == 10)
    }
}

@Suite("Step loop lifecycle")
struct StepLoopLifecycleTests {
    @Test("graceful shutdown finishes the running sequence, refuses new ones, then returns")
    func drain() async throws {
        let runner = ScriptedStepRunner(delay: .milliseconds(2))
        let scheduler = Scheduler(configuration: SchedulerConfiguration(),
                                  limits: SchedulerModelLimits(maxContextLength: 256, kvBlockCount: 64, kvBlockSize: 4))
        let group = ServiceGroup(services: [StepLoop(scheduler: scheduler, runner: runner)], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        let (_, events) = try await scheduler.submit(SequenceRequest(promptTokens: [65, 66], maxNewTokens: 30))
        try await Task.sleep(for: .milliseconds(10))
        await group.triggerGracefulShutdown()
        let collected = try await collectEvents(events)
        #expect(sampledTokens(collected).count == 30)
        #expect(collected.last == .finished(.length))
        try await running.value
        await #expect(throws: GenerationError.shuttingDown) {
            _ = try await scheduler.submit(SequenceRequest(promptTokens: [65], maxNewTokens: 1))
        }
    }

    @Test("a cancelled step loop fails the sequences it leaves queued and refuses new ones")
    func cancelledLoop() async throws {
        let runner = ScriptedStepRunner(delay: .seconds(30))
        let scheduler = Scheduler(configuration: SchedulerConfiguration(maxSequences: 1),
                                  limits: SchedulerModelLimits(maxContextLength: 256, kvBlockCount: 64, kvBlockSize: 4))
        let (_, running) = try await scheduler.submit(SequenceRequest(promptTokens: [65, 66], maxNewTokens: 4))
        let (_, queued) = try await scheduler.submit(SequenceRequest(promptTokens: [67, 68], maxNewTokens: 4))
        let loop = Task { try await StepLoop(scheduler: scheduler, runner: runner).run() }
        while await scheduler.statistics.running == 0 { try await Task.sleep(for: .milliseconds(5)) }
        loop.cancel()
        await #expect(throws: CancellationError.self) { try await loop.value }
        // Bounded: before the fix the queued sequence's stream never ended.
        let outcomes = try await withDeadline(.seconds(10)) {
            var outcomes: [String] = []
            for stream in [running, queued] {
                do {
                    _ = try await collectEvents(stream)
                    outcomes.append("finished")
                } catch {
                    outcomes.append("\(error)")
                }
            }
            return outcomes
        }
        #expect(outcomes?.count == 2)
        #expect(outcomes?.last == GenerationError.shuttingDown.description)
        #expect(await scheduler.statistics.usedBlocks == 0)
        await #expect(throws: GenerationError.shuttingDown) {
            _ = try await scheduler.submit(SequenceRequest(promptTokens: [65], maxNewTokens: 1))
        }
    }
}

/// Allows exactly the tokens of `word`, one after the other, then is finished.
private final class SpellingConstraint: TokenConstraint {
    let word: [TokenID]
    let refuse: Bool
    var position = 0

    init(word: [TokenID], refuse: Bool = false) {
        self.word = word
        self.refuse = refuse
    }

    func allowedTokens(remainingTokens: Int) -> TokenMask {
        var mask = TokenMask(vocabularySize: 258)
        mask.insert(position < word.count ? word[position] : 0)
        return mask
    }

    func accept(_ token: TokenID) -> Bool {
        guard !refuse, position < word.count, token == word[position] else { return false }
        position += 1
        return true
    }

    var isFinished: Bool { position == word.count && !refuse }
}
