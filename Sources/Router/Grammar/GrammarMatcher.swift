import Synchronization
import Tokenizers
import Wire

/// A tokenizer's vocabulary arranged for mask computation: every token's bytes in a trie, so a
/// prefix shared by many tokens is matched once. Built once per served model.
public final class GrammarVocabulary: Sendable {
    /// State masks of rules every grammar builds the same way (any JSON string), by rule name
    /// and state offset: computed once per vocabulary, not once per grammar.
    let sharedStateMasks = Mutex<[String: GrammarStateMasks]>([:])
    public let vocabularySize: Int
    /// Tokens that end generation; allowed when the output is complete.
    public let endTokens: [TokenID]
    /// Children of node n are `childByte/childNode[childStart[n]..<childStart[n + 1]]`, by byte.
    let childStart: [Int32]
    let childByte: [UInt8]
    let childNode: [Int32]
    /// Tokens whose bytes end at node n: `tokenAt[tokenStart[n]..<tokenStart[n + 1]]`.
    let tokenStart: [Int32]
    let tokenAt: [TokenID]
    /// Token t's bytes are `pieces[pieceStart[t]..<pieceStart[t + 1]]` (none for special tokens).
    let pieceStart: [Int32]
    let pieces: [UInt8]

    /// Special tokens never appear inside constrained output; `endTokens` end it.
    public init(tokenizer: any Tokenizer, endTokens: Set<TokenID>) {
        vocabularySize = tokenizer.vocabularySize
        self.endTokens = endTokens.sorted()
        // Tokens sorted by their bytes: a trie in one pass, children in byte order.
        var entries: [(bytes: [UInt8], token: TokenID)] = []
        entries.reserveCapacity(vocabularySize)
        var pieceStart: [Int32] = [0], pieces: [UInt8] = []
        for id in 0..<vocabularySize {
            let token = TokenID(id)
            let bytes = tokenizer.isSpecial(token) ? [] : tokenizer.pieceBytes(token, skipSpecialTokens: false)
            if !bytes.isEmpty { entries.append((bytes, token)) }
            pieces.append(contentsOf: bytes)
            pieceStart.append(Int32(pieces.count))
        }
        self.pieceStart = pieceStart
        self.pieces = pieces
        entries.sort { $0.bytes.lexicographicallyPrecedes($1.bytes) }
        // Nodes as (parent, byte) built along the sorted order; the path is a stack of nodes.
        var children: [[(UInt8, Int32)]] = [[]]
        var tokens: [[TokenID]] = [[]]
        var path: [Int32] = [0]
        var previous: [UInt8] = []
        for entry in entries {
            var common = 0
            while common < min(previous.count, entry.bytes.count), previous[common] == entry.bytes[common] { common += 1 }
            path.removeLast(path.count - 1 - common)
            for byte in entry.bytes[common...] {
                let node = Int32(children.count)
                children.append([])
                tokens.append([])
                children[Int(path.last!)].append((byte, node))
                path.append(node)
            }
            tokens[Int(path.last!)].append(entry.token)
            previous = entry.bytes
        }
        var childStart: [Int32] = [0], childByte: [UInt8] = [], childNode: [Int32] = []
        var tokenStart: [Int32] = [0], tokenAt: [TokenID] = []
        for node in children.indices {
            for (byte, child) in children[node] {
                childByte.append(byte)
                childNode.append(child)
            }
            childStart.append(Int32(childByte.count))
            tokenAt.append(contentsOf: tokens[node])
            tokenStart.append(Int32(tokenAt.count))
        }
        self.childStart = childStart
        self.childByte = childByte
        self.childNode = childNode
        self.tokenStart = tokenStart
        self.tokenAt = tokenAt
    }

    var nodeCount: Int { childStart.count - 1 }
}

/// A position in a grammar: an automaton state and a call stack (an id into a `StackTable`),
/// packed in 64 bits so sets of them are plain integer arrays.
enum Configuration {
    static func pack(state: Int32, stack: Int32) -> UInt64 { UInt64(UInt32(state)) << 32 | UInt64(UInt32(stack)) }
    static func state(_ configuration: UInt64) -> Int { Int(configuration >> 32) }
    static func stack(_ configuration: UInt64) -> Int32 { Int32(truncatingIfNeeded: configuration & 0xFFFF_FFFF) }
}

/// Call stacks, interned: stack id s > 0 is (top[s], parent[s]), 0 the bottom, so equal stacks
/// have equal ids. The configuration steps live here because they push onto it.
struct StackTable {
    private(set) var top: [Int32] = [-1]
    private(set) var parent: [Int32] = [0]
    /// The fewest bytes that finish every frame of the stack (the return states' distances).
    private(set) var cost: [Int32] = [0]
    private var depth: [Int32] = [0]
    private var ids: [UInt64: Int32] = [:]

    /// The deepest nesting followed (deeper configurations are dropped).
    static let maximumDepth: Int32 = 128

    mutating func push(_ returnState: Int32, onto stack: Int32, distance: Int32) -> Int32? {
        let key = Configuration.pack(state: returnState, stack: stack)
        if let id = ids[key] { return id }
        guard depth[Int(stack)] < Self.maximumDepth else { return nil }
        let id = Int32(top.count)
        top.append(returnState)
        parent.append(stack)
        cost.append(min(distance + cost[Int(stack)], GrammarAutomaton.unreachable))
        depth.append(depth[Int(stack)] + 1)
        ids[key] = id
        return id
    }

    /// Closes `buffer[start...]` in place: appends every configuration reachable without reading
    /// a byte (rule calls entered, finished rules returned from; never below stack 0).
    mutating func close(_ buffer: inout [UInt64], from start: Int, automaton: GrammarAutomaton) {
        var index = start
        while index < buffer.count {
            let configuration = buffer[index]
            index += 1
            let state = Configuration.state(configuration), stack = Configuration.stack(configuration)
            let calls = Int(automaton.callStart[state])..<Int(automaton.callStart[state + 1])
            for call in calls {
                let returnState = automaton.callReturn[call]
                guard let pushed = push(returnState, onto: stack, distance: automaton.distance[Int(returnState)]) else { continue }
                Self.add(Configuration.pack(state: automaton.ruleStart[Int(automaton.callRule[call])], stack: pushed),
                         to: &buffer, from: start)
            }
            if automaton.isFinal[state], stack != 0 {
                Self.add(Configuration.pack(state: top[Int(stack)], stack: parent[Int(stack)]), to: &buffer, from: start)
            }
        }
    }

    /// Appends the closed configurations reached from `buffer[start..<end]` by reading `byte`.
    mutating func step(_ buffer: inout [UInt64], from start: Int, to end: Int, byte: UInt8, automaton: GrammarAutomaton) {
        let next = buffer.count
        for index in start..<end {
            let configuration = buffer[index]
            let state = Configuration.state(configuration), stack = Configuration.stack(configuration)
            for edge in Int(automaton.edgeStart[state])..<Int(automaton.edgeStart[state + 1])
            where automaton.edgeLow[edge] <= byte && byte <= automaton.edgeHigh[edge] {
                Self.add(Configuration.pack(state: automaton.edgeTarget[edge], stack: stack), to: &buffer, from: next)
            }
        }
        if buffer.count > next { close(&buffer, from: next, automaton: automaton) }
    }

    /// Appends unless already in `buffer[start...]` (sets stay small: a linear scan).
    private static func add(_ configuration: UInt64, to buffer: inout [UInt64], from start: Int) {
        for index in start..<buffer.count where buffer[index] == configuration { return }
        buffer.append(configuration)
    }
}

/// A state's own masks (see `GrammarMaskTables`).
struct GrammarStateMasks: Sendable {
    /// Bit t of word t / 64: token t is read inside the rule.
    var inside: [UInt64]
    /// Trie nodes past which the rule may have ended inside a token.
    var boundaries: [Int32]
    /// The most bytes, over the tokens read inside, that the shortest completion of the rule
    /// (and of the rules it entered) can need after one of them: with the caller's stack cost
    /// added, a bound on the distance after any inside token.
    var maxInsideDistance: Int32 = 0
}

/// What one automaton state allows on its own, computed once per state and shared by every
/// sequence of the grammar (XGrammar's split into context-independent and -dependent tokens):
/// the tokens read entirely inside the state's rule (entering and leaving sub-rules as needed),
/// and the trie nodes at which the rule can end partway through a token. Past such a node,
/// what follows depends on the caller, so the matcher walks it with its own stack.
public final class GrammarMaskTables: Sendable {
    typealias StateMasks = GrammarStateMasks

    let automaton: GrammarAutomaton
    let vocabulary: GrammarVocabulary
    private struct Tables {
        var stacks = StackTable()
        var states: [Int32: StateMasks] = [:]
    }
    private let tables = Mutex(Tables())

    public init(automaton: GrammarAutomaton, vocabulary: GrammarVocabulary) {
        self.automaton = automaton
        self.vocabulary = vocabulary
    }

    func masks(for state: Int32) -> StateMasks {
        let rule = automaton.ruleOfState[Int(state)]
        if let name = automaton.sharedRuleNames[rule] {
            let key = "\(name)+\(state - automaton.ruleStart[Int(rule)])"
            if let known = vocabulary.sharedStateMasks.withLock({ $0[key] }) { return known }
            let masks = ownMasks(for: state)
            vocabulary.sharedStateMasks.withLock { $0[key] = masks }
            return masks
        }
        return ownMasks(for: state)
    }

    private func ownMasks(for state: Int32) -> StateMasks {
        tables.withLock { tables in
            if let known = tables.states[state] { return known }
            var masks = StateMasks(inside: vocabulary.emptyMaskWords, boundaries: [])
            // Stack 0 stands for "outside the rule": a configuration there that is final marks a boundary.
            var buffer: [UInt64] = [Configuration.pack(state: state, stack: 0)]
            buffer.reserveCapacity(4096)
            tables.stacks.close(&buffer, from: 0, automaton: automaton)
            walk(node: 0, start: 0, end: buffer.count, buffer: &buffer, stacks: &tables.stacks, masks: &masks)
            tables.states[state] = masks
            return masks
        }
    }

    private func walk(node: Int, start: Int, end: Int, buffer: inout [UInt64], stacks: inout StackTable, masks: inout StateMasks) {
        for child in Int(vocabulary.childStart[node])..<Int(vocabulary.childStart[node + 1]) {
            stacks.step(&buffer, from: start, to: end, byte: vocabulary.childByte[child], automaton: automaton)
            defer { buffer.removeLast(buffer.count - end) }
            guard buffer.count > end else { continue }
            let childNode = Int(vocabulary.childNode[child])
            if vocabulary.tokenStart[childNode] < vocabulary.tokenStart[childNode + 1] {
                vocabulary.insertTokens(at: childNode, into: &masks.inside)
                var nearest = GrammarAutomaton.unreachable
                for configuration in buffer[end...] {
                    nearest = min(nearest, automaton.distance[Configuration.state(configuration)] + stacks.cost[Int(Configuration.stack(configuration))])
                }
                masks.maxInsideDistance = max(masks.maxInsideDistance, nearest)
            }
            if buffer[end...].contains(where: { Configuration.stack($0) == 0 && automaton.isFinal[Configuration.state($0)] }),
               vocabulary.childStart[childNode] < vocabulary.childStart[childNode + 1] {
                masks.boundaries.append(Int32(childNode))
            }
            walk(node: childNode, start: end, end: buffer.count, buffer: &buffer, stacks: &stacks, masks: &masks)
        }
    }
}

extension GrammarVocabulary {
    /// Token t's bytes (none for special tokens).
    func bytes(of token: TokenID) -> ArraySlice<UInt8> {
        pieces[Int(pieceStart[Int(token)])..<Int(pieceStart[Int(token) + 1])]
    }

    /// A mask's words with no token set (masks are built as plain words in the hot loops).
    var emptyMaskWords: [UInt64] { [UInt64](repeating: 0, count: (vocabularySize + 63) / 64) }

    func insertTokens(at node: Int, into words: inout [UInt64]) {
        for index in Int(tokenStart[node])..<Int(tokenStart[node + 1]) {
            let token = Int(tokenAt[index])
            words[token >> 6] |= 1 << UInt64(token & 63)
        }
    }
}

/// One sequence's position in a compiled grammar: the set of configurations the output so far
/// can be in, with its own call stacks. A mask is the union of its states' shared masks plus,
/// where a rule can end inside a token, a walk of the rest of the trie with this sequence's
/// stack; masks are cached by configuration set.
public final class GrammarMatcher {
    let automaton: GrammarAutomaton
    let vocabulary: GrammarVocabulary
    private let tables: GrammarMaskTables
    private var stacks = StackTable()
    private var configurations: [UInt64]
    private var maskCache: [[UInt64]: CachedMask] = [:]
    private struct CachedMask {
        var allowed: TokenMask
        /// The tokens found past a rule's end (by boundary walks): only these can lengthen the
        /// shortest completion beyond the states' inside bounds.
        var crossing: [TokenID]
    }
    private var finished = false
    /// Reused space for configuration sets while walking.
    private var scratch: [UInt64] = []

    static let maximumCachedMasks = 2048

    public init(tables: GrammarMaskTables) {
        self.tables = tables
        automaton = tables.automaton
        vocabulary = tables.vocabulary
        var start = [Configuration.pack(state: automaton.ruleStart[Int(automaton.rootRule)], stack: 0)]
        stacks.close(&start, from: 0, automaton: automaton)
        configurations = start.sorted()
        scratch.reserveCapacity(4096)
    }

    convenience init(automaton: GrammarAutomaton, vocabulary: GrammarVocabulary) {
        self.init(tables: GrammarMaskTables(automaton: automaton, vocabulary: vocabulary))
    }

    /// An independent matcher at the same position (sharing the grammar's tables).
    func copy() -> GrammarMatcher {
        let copy = GrammarMatcher(tables: tables)
        copy.stacks = stacks
        copy.configurations = configurations
        copy.maskCache = maskCache
        copy.finished = finished
        return copy
    }

    /// The output so far is a whole match.
    public var isComplete: Bool {
        configurations.contains { configuration in
            let state = Configuration.state(configuration)
            return Configuration.stack(configuration) == 0 && automaton.isFinal[state] && automaton.ruleOfState[state] == automaton.rootRule
        }
    }

    public var isFinished: Bool {
        finished || (isComplete && !canContinue)
    }

    /// Some configuration can still read a byte.
    public var canContinue: Bool {
        configurations.contains { configuration in
            let state = Configuration.state(configuration)
            return automaton.edgeStart[state] < automaton.edgeStart[state + 1]
        }
    }

    public func allowedTokens() -> TokenMask { cachedMask().allowed }

    private func cachedMask() -> CachedMask {
        if let cached = maskCache[configurations] { return cached }
        var mask = vocabulary.emptyMaskWords
        var crossing: [TokenID] = []
        if isComplete {
            for token in vocabulary.endTokens where Int(token) < vocabulary.vocabularySize {
                mask[Int(token) >> 6] |= 1 << UInt64(token & 63)
            }
        }
        // Boundary walks, grouped by the stack they return into.
        var boundaries: [Int32: Set<Int32>] = [:]
        for configuration in configurations {
            let masks = tables.masks(for: Int32(Configuration.state(configuration)))
            for index in mask.indices { mask[index] |= masks.inside[index] }
            let stack = Configuration.stack(configuration)
            if stack != 0, !masks.boundaries.isEmpty { boundaries[stack, default: []].formUnion(masks.boundaries) }
        }
        for (stack, nodes) in boundaries {
            scratch.removeAll(keepingCapacity: true)
            scratch.append(Configuration.pack(state: stacks.top[Int(stack)], stack: stacks.parent[Int(stack)]))
            stacks.close(&scratch, from: 0, automaton: automaton)
            let end = scratch.count
            for node in nodes { walk(node: Int(node), start: 0, end: end, into: &mask, crossing: &crossing) }
        }
        let entry = CachedMask(allowed: TokenMask(words: mask), crossing: crossing)
        if maskCache.count >= Self.maximumCachedMasks { maskCache.removeAll(keepingCapacity: true) }
        maskCache[configurations] = entry
        return entry
    }

    /// How many tokens before the end of the budget the matcher starts checking that the
    /// output can still be completed (a token rarely lengthens the shortest completion by more).
    static let budgetWindow = 64

    /// The mask, narrowed as the budget runs out: within `budgetWindow` of the fewest bytes
    /// that complete the output (an upper bound on the tokens: every byte is a token in the
    /// vocabularies served), a token is allowed only if the output can still be completed, end
    /// token included, in what is left after it; when none can, those that get closest are.
    public func allowedTokens(remainingTokens: Int) -> TokenMask {
        let cached = cachedMask()
        let mask = cached.allowed
        guard Int(shortestCompletion(configurations)) + 1 + Self.budgetWindow >= remainingTokens else { return mask }
        // After this token and before the end token, `limit` more bytes at most.
        let limit = remainingTokens - 2
        let insideFits = configurations.allSatisfy { configuration in
            let bound = tables.masks(for: Int32(Configuration.state(configuration))).maxInsideDistance
                + stacks.cost[Int(Configuration.stack(configuration))]
            return Int(bound) <= limit
        }
        if insideFits {
            // Every inside token fits: only the crossing ones need their distance.
            var words = mask.words
            for token in cached.crossing where Int(distance(after: token)) > limit {
                words[Int(token) >> 6] &= ~(1 << UInt64(token & 63))
            }
            if words.contains(where: { $0 != 0 }) { return TokenMask(words: words) }
        }
        var kept = vocabulary.emptyMaskWords
        var closest = vocabulary.emptyMaskWords
        var closestDistance = GrammarAutomaton.unreachable
        for (wordIndex, word) in mask.words.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                let token = TokenID(wordIndex * 64 + bits.trailingZeroBitCount)
                bits &= bits - 1
                let bit = UInt64(1) << UInt64(token & 63)
                if vocabulary.endTokens.contains(token) {
                    kept[wordIndex] |= bit
                    continue
                }
                let after = distance(after: token)
                if Int(after) <= limit { kept[wordIndex] |= bit }
                if after < closestDistance {
                    closestDistance = after
                    closest = vocabulary.emptyMaskWords
                }
                if after == closestDistance { closest[wordIndex] |= bit }
            }
        }
        return TokenMask(words: kept.contains { $0 != 0 } ? kept : closest)
    }

    /// The fewest bytes that complete the output from here.
    var shortestCompletionBytes: Int { Int(shortestCompletion(configurations)) }

    /// The fewest bytes that complete the output from a configuration set.
    private func shortestCompletion(_ set: some Collection<UInt64>) -> Int32 {
        var best = GrammarAutomaton.unreachable
        for configuration in set {
            let total = automaton.distance[Configuration.state(configuration)] + stacks.cost[Int(Configuration.stack(configuration))]
            best = min(best, total)
        }
        return best
    }

    /// The fewest bytes that complete the output after `token` (unreachable if it is refused).
    private func distance(after token: TokenID) -> Int32 {
        read(vocabulary.bytes(of: token)).map { shortestCompletion($0) } ?? GrammarAutomaton.unreachable
    }

    /// The configurations after `bytes` from the current ones (in `scratch`), nil when a byte
    /// is refused. Nothing of the matcher's position changes.
    private func read<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> ArraySlice<UInt64>? {
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: configurations)
        var start = 0
        for byte in bytes {
            let end = scratch.count
            stacks.step(&scratch, from: start, to: end, byte: byte, automaton: automaton)
            guard scratch.count > end else { return nil }
            start = end
        }
        return scratch[start...]
    }

    /// Depth-first over the trie below `node`: a child is followed while some configuration
    /// reads its byte; every token met on the way is allowed.
    private func walk(node: Int, start: Int, end: Int, into mask: inout [UInt64], crossing: inout [TokenID]) {
        for child in Int(vocabulary.childStart[node])..<Int(vocabulary.childStart[node + 1]) {
            stacks.step(&scratch, from: start, to: end, byte: vocabulary.childByte[child], automaton: automaton)
            defer { scratch.removeLast(scratch.count - end) }
            guard scratch.count > end else { continue }
            let childNode = Int(vocabulary.childNode[child])
            vocabulary.insertTokens(at: childNode, into: &mask)
            for index in Int(vocabulary.tokenStart[childNode])..<Int(vocabulary.tokenStart[childNode + 1]) {
                crossing.append(vocabulary.tokenAt[index])
            }
            walk(node: childNode, start: end, end: scratch.count, into: &mask, crossing: &crossing)
        }
    }

    public func accept(_ token: TokenID) -> Bool {
        guard !finished else { return false }
        if vocabulary.endTokens.contains(token) {
            guard isComplete else { return false }
            finished = true
            return true
        }
        guard token >= 0, Int(token) < vocabulary.vocabularySize else { return false }
        let bytes = vocabulary.bytes(of: token)
        return !bytes.isEmpty && accept(bytes: bytes)
    }

    /// Feeds text directly (a token's bytes; tests and the benchmark's document walk). Nothing
    /// changes when some byte is refused.
    func accept<Bytes: Sequence<UInt8>>(bytes: Bytes) -> Bool {
        guard let next = read(bytes) else { return false }
        configurations = next.sorted()
        return true
    }
}
