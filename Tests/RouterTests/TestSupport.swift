import Foundation
@testable import RouterCore
import Tokenizers
import Wire

/// One token per byte (ids 0-255) plus `<eos>` = 256 and `<bos>` = 257: text and ids map
/// one-to-one, so tests can state expected text exactly.
struct ByteTokenizer: Tokenizer {
    static let eos: TokenID = 256
    static let bos: TokenID = 257
    var chatTemplate: String?
    var addsBOS = false

    func encode(_ text: String, addSpecialTokens: Bool, parseSpecial: Bool) -> [TokenID] {
        var ids = (addSpecialTokens && addsBOS) ? [Self.bos] : []
        let bytes = Array(text.utf8)
        var index = 0
        while index < bytes.count {
            if parseSpecial, bytes[index...].starts(with: Array("<eos>".utf8)) { ids.append(Self.eos); index += 5; continue }
            if parseSpecial, bytes[index...].starts(with: Array("<bos>".utf8)) { ids.append(Self.bos); index += 5; continue }
            ids.append(TokenID(bytes[index]))
            index += 1
        }
        return ids
    }

    func decode(_ ids: [TokenID], skipSpecialTokens: Bool) -> String {
        var bytes = ids.flatMap { pieceBytes($0, skipSpecialTokens: skipSpecialTokens) }
        if stripsLeadingSpace, bytes.first == 0x20 { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }

    func pieceBytes(_ id: TokenID, skipSpecialTokens: Bool) -> [UInt8] {
        switch id {
        case 0..<256: return [UInt8(id)]
        case Self.eos: return skipSpecialTokens ? [] : Array("<eos>".utf8)
        case Self.bos: return skipSpecialTokens ? [] : Array("<bos>".utf8)
        default: return []
        }
    }

    func token(for id: TokenID) -> String? {
        switch id {
        case 0..<256: return String(decoding: [UInt8(id)], as: UTF8.self)
        case Self.eos: return "<eos>"
        case Self.bos: return "<bos>"
        default: return nil
        }
    }

    func id(for token: String) -> TokenID? {
        if token == "<eos>" { return Self.eos }
        if token == "<bos>" { return Self.bos }
        let bytes = Array(token.utf8)
        return bytes.count == 1 ? TokenID(bytes[0]) : nil
    }

    func isSpecial(_ id: TokenID) -> Bool { id >= 256 }
    var specialTokens: SpecialTokenIDs { SpecialTokenIDs(bos: Self.bos, eos: Self.eos, stop: [Self.eos]) }
    var vocabularySize: Int { 258 }
    /// Set to behave like a SentencePiece vocabulary, whose decode drops one leading space.
    var stripsLeadingSpace = false
}

/// A worker stand-in with a fixed script: the token sampled at position p is the letter
/// 'a' + p % 26 (so output is the same whatever the batching or preemption), or `<eos>` once
/// position `eosAtPosition` is reached; under an allowed-token mask, the lowest allowed id (as a
/// greedy worker would pick among equal logits). Records every step; can fail chosen steps.
final class ScriptedStepRunner: StepRunner, @unchecked Sendable {
    let model: ClusterModelInfo
    let eosAtPosition: Int?
    let delay: Duration?
    private let lock = NSLock()
    private var _steps: [Tessel_Wire_Step] = []
    private var failingSteps: Set<Int>

    init(contextLength: Int = 256, blockCount: Int = 64, blockSize: Int = 4, eosAtPosition: Int? = nil,
         delay: Duration? = nil, failingSteps: Set<Int> = []) {
        model = ClusterModelInfo(architecture: "scripted", vocabSize: 258, maxContextLength: contextLength,
                                 fingerprint: "test", kvBlockCount: blockCount, kvBlockSize: blockSize, worldSize: 1)
        self.eosAtPosition = eosAtPosition
        self.delay = delay
        self.failingSteps = failingSteps
    }

    /// Every step run, with each sequence's whole block table (as a worker completes it from
    /// what earlier steps sent).
    var steps: [Tessel_Wire_Step] { lock.withLock { _steps } }
    private var tables: [UInt64: [UInt32]] = [:]

    /// `step` with whole block tables; a continued sequence it never saw is the scheduler's bug.
    private func resolved(_ step: Tessel_Wire_Step) throws -> Tessel_Wire_Step {
        for id in step.finishedSequences { tables.removeValue(forKey: id) }
        var whole = step
        for index in whole.sequences.indices {
            let entry = whole.sequences[index]
            var table: [UInt32] = []
            if entry.continues {
                guard let held = tables[entry.sequenceID] else { throw ScriptedFailure.unknownSequence(entry.sequenceID) }
                table = held
            }
            table += entry.blockTable
            tables[entry.sequenceID] = table
            whole.sequences[index].blockTable = table
        }
        return whole
    }
    /// Every sequence a step said was finished.
    var released: [UInt64] { steps.flatMap(\.finishedSequences) }

    static func token(atPosition position: Int) -> TokenID { TokenID(UInt8(ascii: "a")) + TokenID(position % 26) }

    /// The script's token at `position` (unconstrained).
    private func sampledToken(atPosition position: Int) -> TokenID {
        eosAtPosition.map { position >= $0 } == true ? ByteTokenizer.eos : Self.token(atPosition: position)
    }

    func run(_ step: Tessel_Wire_Step) async throws -> Tessel_Wire_StepResult {
        if let delay { try await Task.sleep(for: delay) }
        let index = try lock.withLock { () -> Int in
            _steps.append(try resolved(step))
            return _steps.count - 1
        }
        if failingSteps.contains(index) { throw ScriptedFailure.stepRejected(index) }
        var result = Tessel_Wire_StepResult()
        result.stepID = step.stepID
        for entry in step.sequences {
            var outcome = Tessel_Wire_SequenceResult()
            outcome.sequenceID = entry.sequenceID
            let end = Int(entry.startPosition) + entry.tokens.count
            if entry.wantPromptLogprobs {
                for position in max(Int(entry.startPosition), 1)..<end {
                    var prompt = Tessel_Wire_ScoredToken()
                    prompt.token = entry.tokens[position - Int(entry.startPosition)]
                    prompt.logprob = -Float(position)
                    var alternative = Tessel_Wire_TokenLogprob()
                    alternative.token = TokenID(UInt8(ascii: "z"))
                    alternative.logprob = -0.25
                    prompt.topLogprobs = [alternative]
                    outcome.promptLogprobs.append(prompt)
                }
            }
            if entry.sample {
                outcome.sampled = true
                // Further decode passes: each samples at the next position, as a worker does.
                for position in end..<(end + max(0, Int(entry.decodeSteps) - 1)) {
                    var following = Tessel_Wire_ScoredToken()
                    following.token = sampledToken(atPosition: position + 1)
                    following.logprob = -0.5
                    outcome.followingTokens.append(following)
                }
                var token = sampledToken(atPosition: end)
                if !entry.allowedTokens.isEmpty {
                    let mask = TokenMask(wireBytes: entry.allowedTokens)
                    token = (0..<TokenID(model.vocabSize)).first(where: mask.contains) ?? -1
                }
                outcome.token = token
                outcome.logprob = -0.5
                if entry.sampling.wantLogprobs {
                    outcome.topLogprobs = (0..<Int(entry.sampling.topLogprobs)).map { rank in
                        var alternative = Tessel_Wire_TokenLogprob()
                        alternative.token = token + TokenID(rank)
                        alternative.logprob = -0.5 - Float(rank)
                        return alternative
                    }
                }
            }
            result.sequences.append(outcome)
        }
        return result
    }

}

enum ScriptedFailure: Error, CustomStringConvertible {
    case stepRejected(Int)
    case unknownSequence(UInt64)
    var description: String {
        switch self {
        case .stepRejected(let index): return "scripted failure of step \(index)"
        case .unknownSequence(let id): return "sequence \(id) continues a step the runner never saw"
        }
    }
}

/// The text the scripted runner produces for positions [from, from + count).
func scriptedText(from: Int, count: Int) -> String {
    String(decoding: (from..<from + count).map { UInt8(ScriptedStepRunner.token(atPosition: $0)) }, as: UTF8.self)
}

/// Drains one sequence's event stream.
func collectEvents(_ stream: AsyncThrowingStream<SequenceEvent, any Error>) async throws -> [SequenceEvent] {
    var events: [SequenceEvent] = []
    for try await event in stream { events.append(event) }
    return events
}

func sampledTokens(_ events: [SequenceEvent]) -> [TokenID] {
    events.compactMap { if case .token(let sampled) = $0 { return sampled.token } else { return nil } }
}
