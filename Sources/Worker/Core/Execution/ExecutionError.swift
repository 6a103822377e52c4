/// A step the executor refuses; returned to the router as that step's error.
public enum ExecutionError: Error, CustomStringConvertible, Equatable {
    case emptySequence(id: UInt64)
    case tokenOutOfRange(id: UInt64, index: Int, token: Int32, vocabSize: Int)
    case negativeStartPosition(id: UInt64, position: Int)
    case contextOverflow(id: UInt64, endPosition: Int, maxContext: Int)
    case blockTableTooShort(id: UInt64, blocks: Int, groups: Int, blockSize: Int, needed: Int)
    case blockOutOfRange(id: UInt64, index: Int, block: Int32, blockCount: Int)
    case invalidSampling(id: UInt64, detail: String)
    case missingPromptContext(id: UInt64, position: Int)
    case invalidDecodeSteps(id: UInt64, steps: Int, detail: String)

    public var description: String {
        switch self {
        case .emptySequence(let id):
            "sequence \(id): no tokens to run"
        case .tokenOutOfRange(let id, let index, let token, let vocabSize):
            "sequence \(id): token \(token) at index \(index) is outside the vocabulary 0..<\(vocabSize)"
        case .negativeStartPosition(let id, let position):
            "sequence \(id): start position \(position) is negative"
        case .contextOverflow(let id, let endPosition, let maxContext):
            "sequence \(id): positions up to \(endPosition) exceed the model's context of \(maxContext) tokens"
        case .blockTableTooShort(let id, let blocks, let groups, let blockSize, let needed):
            groups == 1
                ? "sequence \(id): block table has \(blocks) blocks of \(blockSize) tokens, \(needed) positions need \((needed + blockSize - 1) / blockSize)"
                : "sequence \(id): block table has \(blocks) blocks, \(needed) positions need \((needed + blockSize - 1) / blockSize) blocks of \(blockSize) tokens in each of \(groups) KV groups"
        case .blockOutOfRange(let id, let index, let block, let blockCount):
            "sequence \(id): block table entry \(index) is block \(block), the pool has blocks 0..<\(blockCount)"
        case .invalidSampling(let id, let detail):
            "sequence \(id): invalid sampling parameters: \(detail)"
        case .missingPromptContext(let id, let position):
            "sequence \(id): prompt logprobs from position \(position) need the previous chunk of this sequence to have asked for prompt logprobs too"
        case .invalidDecodeSteps(let id, let steps, let detail):
            "sequence \(id): \(steps) decode steps: \(detail)"
        }
    }
}
