import Foundation
import Testing
@testable import WorkerCore

/// Reference numbers written by scripts/fixtures/llama_reference.py.
struct ReferenceCase: Decodable {
    var prompt: [Int32]
    var logits: [Float]?
    var greedy: [Int32]
}

struct ReferenceFile: Decodable {
    var model: String
    var cases: [ReferenceCase]
    var vocab_size: Int?
    var logits_file: String?
}

enum Fixtures {
    static func url(_ name: String) throws -> URL {
        try #require(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures"),
                     "fixture \(name) is missing from Tests/WorkerTests/Fixtures")
    }

    /// Expected numbers; for large vocabularies the logits come from a float32 side file.
    static func reference(_ name: String) throws -> ReferenceFile {
        var file = try JSONDecoder().decode(ReferenceFile.self, from: Data(contentsOf: url(name)))
        if let side = file.logits_file, let vocab = file.vocab_size {
            let data = try Data(contentsOf: url(side))
            let floats = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            try #require(floats.count == vocab * file.cases.count, "\(side) holds \(floats.count) floats")
            for i in file.cases.indices {
                file.cases[i].logits = Array(floats[(i * vocab)..<((i + 1) * vocab)])
            }
        }
        return file
    }

    static let defaultModelPath = "/root/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf"

    /// The default model, or a failure telling how to get it (these tests never skip).
    static func defaultModel() throws -> String {
        guard FileManager.default.fileExists(atPath: defaultModelPath) else {
            throw FixtureError.missingDefaultModel(path: defaultModelPath)
        }
        return defaultModelPath
    }
}

enum FixtureError: Error, CustomStringConvertible {
    case missingDefaultModel(path: String)

    var description: String {
        switch self {
        case .missingDefaultModel(let path):
            "\(path) is missing: run scripts/fetch-model to download the default model"
        }
    }
}

/// max |a − b| / max |b|: the error relative to the reference's largest logit.
func relativeError(_ actual: [Float], _ expected: [Float]) -> Float {
    precondition(actual.count == expected.count, "\(actual.count) vs \(expected.count) logits")
    var worst: Float = 0, scale: Float = 0
    for i in expected.indices {
        worst = max(worst, abs(actual[i] - expected[i]))
        scale = max(scale, abs(expected[i]))
    }
    return worst / scale
}

/// Consecutive block ids starting at `first`, enough for `tokens` positions.
/// Consecutive blocks from `first` for `tokens` positions: one per KV group for each block of
/// positions (group-interleaved, as the router sends them).
func blockTable(first: Int32 = 0, tokens: Int, groups: Int = 1, blockSize: Int = ModelExecutor.kvBlockSize) -> [Int32] {
    (0..<Int32((tokens + blockSize - 1) / blockSize * groups)).map { first + $0 }
}

enum GreedyDecodingError: Error {
    case noSampledToken(step: Int)
}

extension ModelExecutor {
    /// Greedy decoding step by step (prompt as one step, then one token per step).
    func greedy(_ prompt: [Int32], count: Int, id: UInt64 = 1, firstBlock: Int32 = 0) throws -> [Int32] {
        let table = blockTable(first: firstBlock, tokens: prompt.count + count, groups: info.kvGroupWindows.count)
        var output: [Int32] = []
        var work = SequenceWork(id: id, tokens: prompt, startPosition: 0, blockTable: table)
        for _ in 0..<count {
            guard let outcome = execute([work]).first?.sampled else { throw GreedyDecodingError.noSampledToken(step: output.count) }
            output.append(outcome.token)
            work.startPosition += work.tokens.count
            work.tokens = [outcome.token]
            work.generatedTokens.append(outcome.token)
        }
        return output
    }

    /// Last-position logits of a prompt run in one step.
    func promptLogits(_ prompt: [Int32], id: UInt64 = 1, firstBlock: Int32 = 0) throws -> [Float] {
        let work = SequenceWork(id: id, tokens: prompt, startPosition: 0,
                                blockTable: blockTable(first: firstBlock, tokens: prompt.count, groups: info.kvGroupWindows.count),
                                sample: false)
        return try lastLogits([work])[0]
    }
}
