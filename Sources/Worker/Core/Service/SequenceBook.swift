import Wire

/// What a worker keeps of each running sequence between steps, so that a step names only what
/// is new for it (`SequenceStep.continues`): its KV block table, the tokens it generated (for
/// the penalties) and its prompt (for the repetition penalty). An entry is made whole by a
/// sequence's first step, extended by later ones, and dropped when a step lists the sequence
/// as finished.
public struct SequenceBook: Sendable {
    public struct Entry: Sendable, Equatable {
        public var blockTable: [Int32]
        public var generatedTokens: [Int32]
        public var promptTokens: [Int32]
    }

    private var entries: [UInt64: Entry] = [:]

    public init() {}

    public var count: Int { entries.count }

    public subscript(id: UInt64) -> Entry? { entries[id] }

    /// The sequence's state after `step`: `step` itself if it is whole, else what the book
    /// holds extended by it.
    public mutating func apply(_ step: Tessel_Wire_SequenceStep) throws -> Entry {
        let blocks = try step.blockTable.map { blockID -> Int32 in
            guard let value = Int32(exactly: blockID) else {
                throw StepConversionError.blockIDOutOfRange(sequenceID: step.sequenceID, blockID: blockID)
            }
            return value
        }
        guard step.continues else {
            let entry = Entry(blockTable: blocks, generatedTokens: step.generatedTokens, promptTokens: step.promptTokens)
            entries[step.sequenceID] = entry
            return entry
        }
        guard var entry = entries[step.sequenceID] else {
            throw StepConversionError.unknownSequence(sequenceID: step.sequenceID)
        }
        entry.blockTable += blocks
        entry.generatedTokens += step.generatedTokens
        entries[step.sequenceID] = entry
        return entry
    }

    public mutating func forget(_ ids: [UInt64]) {
        for id in ids { entries.removeValue(forKey: id) }
    }
}
