import Collectives
import Foundation
import RankThreads
import Testing
import Wire
@testable import WorkerCore

/// Several decode passes in one step (`SequenceWork.decodeSteps`, the router's multi-step
/// scheduling) must sample exactly what one pass per step samples: the same tokens, logprobs
/// and alternatives, with penalties seeing the tokens sampled by the step's earlier passes.
@Suite("decode passes")
struct DecodePassTests {
    static let sequences = [
        (id: UInt64(1), prompt: [Int32]([1, 5, 9, 13]), sampling: SamplingParameters(temperature: 0.9, topP: 0.95, seed: 42,
                                                                                        frequencyPenalty: 0.7), passes: 6),
        (id: UInt64(2), prompt: [Int32]([1, 7, 8]), sampling: SamplingParameters.greedy, passes: 3),
        (id: UInt64(3), prompt: [Int32]([1, 2, 3, 4, 5]), sampling: SamplingParameters(temperature: 1.2, seed: 7,
                                                                                          repetitionPenalty: 1.3), passes: 5),
    ]

    /// The prompts but their last tokens in one step; then from each last prompt token either
    /// one step of `passes + 1` decode passes, or one step per pass. Each sequence's sampled
    /// tokens with logprobs and alternatives (none on ranks other than 0). Every rank knows
    /// the prompts, so a group runs the multi-pass step with no token from rank 0.
    static func decode(_ executor: ModelExecutor, multiPass: Bool) throws -> [[ScoredToken]] {
        var work = sequences.enumerated().map { index, item in
            SequenceWork(id: item.id, tokens: Array(item.prompt.dropLast()), startPosition: 0,
                         blockTable: blockTable(first: Int32(index) * 2, tokens: item.prompt.count + item.passes + 1),
                         sampling: item.sampling, topLogprobs: 3, wantLogprobs: true, sample: false, promptTokens: item.prompt)
        }
        var output = [[ScoredToken]](repeating: [], count: sequences.count)
        func run(_ slots: [Int]) throws {
            for (slot, outcome) in zip(slots, executor.execute(slots.map { work[$0] })) {
                #expect(outcome.error == nil, "\(outcome.error ?? "")")
                guard let sampled = outcome.sampled else { continue }
                output[slot].append(ScoredToken(chosen: sampled, top: outcome.topLogprobs))
                output[slot] += outcome.following
            }
        }
        try run(Array(work.indices))
        for slot in work.indices {
            work[slot].startPosition = work[slot].tokens.count
            work[slot].tokens = [sequences[slot].prompt.last!]
            work[slot].sample = true
        }
        if multiPass {
            for slot in work.indices { work[slot].decodeSteps = sequences[slot].passes + 1 }
            try run(Array(work.indices))
            return output
        }
        for pass in 0...sequences.map(\.passes).max()! {
            let slots = work.indices.filter { sequences[$0].passes >= pass }
            if pass > 0 {
                for slot in slots {
                    work[slot].startPosition += 1
                    work[slot].tokens = [output[slot].last!.chosen.token]
                    work[slot].generatedTokens = output[slot].map(\.chosen.token)
                }
            }
            try run(slots)
        }
        return output
    }

    @Test("one step of several passes samples what one step per pass does, penalties and seeds included")
    func matchesSinglePasses() throws {
        let path = try Fixtures.url("tiny-llama").path
        let single = try Self.decode(try ModelExecutor.load(model: path, kvCacheTokens: 256), multiPass: false)
        let multi = try Self.decode(try ModelExecutor.load(model: path, kvCacheTokens: 256), multiPass: true)
        #expect(multi.map(\.count) == Self.sequences.map { $0.passes + 1 })
        #expect(multi == single)
    }

    @Test("several passes are only for a decode that fits its block table and the context")
    func validation() throws {
        let model = try ModelExecutor.load(model: try Fixtures.url("tiny-llama").path, kvCacheTokens: 256)
        func refusal(_ work: SequenceWork) -> String? { model.execute([work])[0].error }
        #expect(refusal(SequenceWork(id: 1, tokens: [1, 2], startPosition: 0, blockTable: [0], decodeSteps: 2))
                == ExecutionError.invalidDecodeSteps(id: 1, steps: 2, detail: "only a decode (one token, sampled) runs several passes").description)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 0, blockTable: [0], sample: false, decodeSteps: 2)) != nil)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 0, blockTable: [0],
                                     allowedTokens: TokenMask(words: [8]), decodeSteps: 2))?
                .contains("mask") == true)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 0, blockTable: [0], decodeSteps: 0))?
                .contains("at least 1") == true)
        // Passes write positions 10 ..< 20: a block of 16 is too short, and the context ends at 512.
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 10, blockTable: [0], decodeSteps: 10))
                == ExecutionError.blockTableTooShort(id: 1, blocks: 1, groups: 1, blockSize: 16, needed: 20).description)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 508, blockTable: Array(repeating: 0, count: 32),
                                     decodeSteps: 8))
                == ExecutionError.contextOverflow(id: 1, endPosition: 516, maxContext: 512).description)
        #expect(refusal(SequenceWork(id: 1, tokens: [1], startPosition: 10, blockTable: [0, 1], decodeSteps: 10)) == nil)
    }

    @Test("in a tensor-parallel group the other ranks run rank 0's sampled tokens: rank 0 samples what one executor does",
          arguments: [false, true])
    func tensorParallel(overTCP: Bool) throws {
        let variant = TensorParallelParityTests.Variant(model: "tiny-gqa9x3", world: 2, activations: .f32, overTCP: overTCP)
        let single = try Self.decode(try TensorParallelParityTests.load(variant, rank: 0, group: nil), multiPass: false)
        let transport: GroupSettings.Transport = overTCP ? .tcp(freeLoopbackEndpoints(2))
            : .sharedMemory(name: "/tessel-passes-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let ranks = try onRankThreads(2) { rank in
            try Self.decode(try TensorParallelParityTests.load(variant, rank: rank, group: transport), multiPass: true)
        }
        #expect(ranks[0].map(\.count) == Self.sequences.map { $0.passes + 1 })
        for (index, tokens) in ranks[0].enumerated() {
            #expect(tokens.map(\.chosen.token) == single[index].map(\.chosen.token), "sequence \(index)")
            for (pass, (ours, theirs)) in zip(tokens, single[index]).enumerated() {
                #expect(abs(ours.chosen.logprob - theirs.chosen.logprob) < 1e-4, "sequence \(index) pass \(pass)")
            }
        }
    }
}
