import Synchronization
import Tokenizers

/// Compiled grammars by their source, so a schema sent again (every call of an agent, every
/// request of a form) reuses its automaton and the state masks its earlier requests filled in.
/// Least recently used entries go first. It also holds the vocabulary arranged for masks,
/// built on the first structured request rather than at start-up.
public final class GrammarCache: Sendable {
    public let capacity: Int
    private let tokenizer: any Tokenizer
    private let endTokens: Set<TokenID>
    private let builtVocabulary = Mutex<GrammarVocabulary?>(nil)
    private struct Entries {
        var tables: [String: GrammarMaskTables] = [:]
        /// Sources, least recently used first.
        var order: [String] = []
    }
    private let entries = Mutex(Entries())

    /// `endTokens` end a constrained output once it is complete.
    public init(tokenizer: any Tokenizer, endTokens: Set<TokenID>, capacity: Int = 64) {
        self.tokenizer = tokenizer
        self.endTokens = endTokens
        self.capacity = capacity
    }

    /// The tokenizer's vocabulary as masks read it.
    public var vocabulary: GrammarVocabulary {
        builtVocabulary.withLock { built in
            if let built { return built }
            let vocabulary = GrammarVocabulary(tokenizer: tokenizer, endTokens: endTokens)
            built = vocabulary
            return vocabulary
        }
    }

    /// The tables for `request`, compiled on first use.
    public func tables(for request: StructuredOutputRequest) throws(GrammarError) -> GrammarMaskTables {
        let key = request.description
        if let known = entries.withLock({ entries -> GrammarMaskTables? in
            guard let known = entries.tables[key] else { return nil }
            entries.order.removeAll { $0 == key }
            entries.order.append(key)
            return known
        }) {
            return known
        }
        // Compiled outside the lock: two first requests may both compile, and one result is kept.
        let tables = GrammarMaskTables(automaton: try request.grammar(), vocabulary: vocabulary)
        entries.withLock { entries in
            if entries.tables[key] == nil { entries.order.append(key) }
            entries.tables[key] = tables
            while entries.order.count > capacity { entries.tables[entries.order.removeFirst()] = nil }
        }
        return tables
    }

    public var count: Int { entries.withLock { $0.tables.count } }
}
