import Synchronization

/// Compiled grammars by their source, so a schema sent again (every call of an agent, every
/// request of a form) reuses its automaton and the state masks its earlier requests filled in.
/// Least recently used entries go first.
public final class GrammarCache: Sendable {
    public let capacity: Int
    private struct Entries {
        var tables: [String: GrammarMaskTables] = [:]
        /// Sources, least recently used first.
        var order: [String] = []
    }
    private let entries = Mutex(Entries())

    public init(capacity: Int = 64) {
        self.capacity = capacity
    }

    /// The tables for `request`, compiled on first use.
    public func tables(for request: StructuredOutputRequest, vocabulary: GrammarVocabulary) throws(GrammarError) -> GrammarMaskTables {
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
