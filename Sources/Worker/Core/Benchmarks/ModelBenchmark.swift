import Foundation

/// Times a loaded model without HTTP or the router: a prefill of `promptTokens` tokens per
/// sequence, then `decodeSteps` steps of one token for each of `batch` sequences (greedy, EOS
/// ignored). What the serving benchmark measures end to end, minus the wire.
public struct ModelBenchmark: Sendable {
    public var promptTokens: Int
    public var decodeSteps: Int
    public var batch: Int

    public init(promptTokens: Int, decodeSteps: Int, batch: Int) {
        self.promptTokens = promptTokens
        self.decodeSteps = decodeSteps
        self.batch = batch
    }

    public struct Result: Sendable {
        public var prefillSeconds: Double
        public var decodeSeconds: Double
        public var prefillTokensPerSecond: Double
        public var decodeTokensPerSecond: Double
    }

    public func run(_ executor: ModelExecutor) throws -> Result {
        let blockSize = executor.info.kvBlockSize
        // One block of each KV group per block of positions.
        let blocksPerSequence = (promptTokens + decodeSteps + blockSize - 1) / blockSize * executor.info.kvGroupWindows.count
        guard blocksPerSequence * batch <= executor.info.kvBlockCount else {
            throw ModelBenchmarkError.cacheTooSmall(needed: blocksPerSequence * batch, available: executor.info.kvBlockCount)
        }
        let span = max(executor.info.vocabSize - 400, 1)
        var work: [SequenceWork] = []
        for index in 0..<batch {
            // Ordinary-vocabulary ids, different for every sequence, clear of low special ids.
            let tokens = (0..<promptTokens).map { position -> Int32 in
                let mixed = position * 7919 + index * 104_729
                return Int32(mixed % span + 300)
            }
            let table = (0..<blocksPerSequence).map { Int32(index * blocksPerSequence + $0) }
            work.append(SequenceWork(id: UInt64(index + 1), tokens: tokens, startPosition: 0, blockTable: table))
        }
        let clock = ContinuousClock()
        var chunkTokens = 0
        let prefill = try clock.measure {
            // As the scheduler would: chunks of the model's chunk size, one sequence after another.
            for index in work.indices {
                let whole = work[index].tokens
                var start = 0
                while start < whole.count {
                    let end = min(whole.count, start + executor.model.maxChunkTokens)
                    var chunk = work[index]
                    chunk.tokens = Array(whole[start..<end])
                    chunk.startPosition = start
                    chunk.sample = end == whole.count
                    let outcome = executor.execute([chunk])[0]
                    if let error = outcome.error { throw ModelBenchmarkError.refused(error) }
                    chunkTokens += chunk.tokens.count
                    if let sampled = outcome.sampled {
                        work[index].tokens = [sampled.token]
                        work[index].startPosition = whole.count
                    }
                    start = end
                }
            }
        }
        let decode = try clock.measure {
            for _ in 0..<decodeSteps {
                for (index, outcome) in executor.execute(work).enumerated() {
                    if let error = outcome.error { throw ModelBenchmarkError.refused(error) }
                    work[index].startPosition += 1
                    work[index].tokens = [outcome.sampled!.token]
                }
            }
        }
        let prefillSeconds = prefill / .seconds(1), decodeSeconds = decode / .seconds(1)
        return Result(prefillSeconds: prefillSeconds, decodeSeconds: decodeSeconds,
                      prefillTokensPerSecond: Double(chunkTokens) / prefillSeconds,
                      decodeTokensPerSecond: Double(batch * decodeSteps) / decodeSeconds)
    }
}

public enum ModelBenchmarkError: Error, CustomStringConvertible {
    case cacheTooSmall(needed: Int, available: Int)
    /// The executor refused one of the benchmark's sequences.
    case refused(String)

    public var description: String {
        switch self {
        case .cacheTooSmall(let needed, let available):
            "the benchmark needs \(needed) KV blocks, the cache has \(available): raise --kv-cache-memory"
        case .refused(let reason):
            "the model refused a benchmark sequence: \(reason)"
        }
    }
}
