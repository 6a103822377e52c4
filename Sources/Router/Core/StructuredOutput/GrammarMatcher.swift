import Tokenizers
import Wire

/// A tokenizer's vocabulary arranged for mask computation: every token's bytes in a trie, so a
/// prefix shared by many tokens is matched once. Built once per served model.
public final class GrammarVocabulary: Sendable {
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

/// One sequence's position in a compiled grammar: the set of configurations (automaton state,
/// call stack) the output so far can be in. A call stack is an id into this matcher's table of
/// stacks, interned so equal stacks have equal ids; masks are cached by configuration set.
public final class GrammarMatcher: TokenConstraint {
    let automaton: GrammarAutomaton
    let vocabulary: GrammarVocabulary
    /// Stack id s > 0 is (stackTop[s], stackParent[s]); 0 is the empty stack.
    private var stackTop: [Int32] = [-1]
    private var stackParent: [Int32] = [0]
    private var stackDepth: [Int32] = [0]
    private var stackIDs: [UInt64: Int32] = [:]
    private var configurations: [UInt64]
    private var maskCache: [[UInt64]: TokenMask] = [:]
    private var finished = false

    /// The deepest nesting followed (deeper configurations are dropped).
    static let maximumDepth: Int32 = 128
    static let maximumCachedMasks = 2048

    public init(automaton: GrammarAutomaton, vocabulary: GrammarVocabulary) {
        self.automaton = automaton
        self.vocabulary = vocabulary
        configurations = []
        configurations = closure(of: [Self.pack(state: automaton.ruleStart[Int(automaton.rootRule)], stack: 0)])
    }

    /// An independent matcher at the same position (the copy shares the compiled grammar).
    func copy() -> GrammarMatcher {
        let copy = GrammarMatcher(automaton: automaton, vocabulary: vocabulary)
        copy.stackTop = stackTop
        copy.stackParent = stackParent
        copy.stackDepth = stackDepth
        copy.stackIDs = stackIDs
        copy.configurations = configurations
        copy.maskCache = maskCache
        copy.finished = finished
        return copy
    }

    private static func pack(state: Int32, stack: Int32) -> UInt64 { UInt64(UInt32(state)) << 32 | UInt64(UInt32(stack)) }
    private static func state(_ configuration: UInt64) -> Int { Int(configuration >> 32) }
    private static func stack(_ configuration: UInt64) -> Int32 { Int32(truncatingIfNeeded: configuration & 0xFFFF_FFFF) }

    private func push(_ returnState: Int32, onto stack: Int32) -> Int32? {
        let key = UInt64(UInt32(returnState)) << 32 | UInt64(UInt32(stack))
        if let id = stackIDs[key] { return id }
        guard stackDepth[Int(stack)] < Self.maximumDepth else { return nil }
        let id = Int32(stackTop.count)
        stackTop.append(returnState)
        stackParent.append(stack)
        stackDepth.append(stackDepth[Int(stack)] + 1)
        stackIDs[key] = id
        return id
    }

    /// Every configuration reachable without reading a byte: rule calls entered, finished rules
    /// returned from. Sorted, so equal sets compare equal.
    private func closure(of start: [UInt64]) -> [UInt64] {
        var seen = Set<UInt64>(start)
        var pending = start
        var result: [UInt64] = []
        while let configuration = pending.popLast() {
            result.append(configuration)
            let state = Self.state(configuration), stack = Self.stack(configuration)
            func add(_ next: UInt64) {
                if seen.insert(next).inserted { pending.append(next) }
            }
            for call in Int(automaton.callStart[state])..<Int(automaton.callStart[state + 1]) {
                guard let pushed = push(automaton.callReturn[call], onto: stack) else { continue }
                add(Self.pack(state: automaton.ruleStart[Int(automaton.callRule[call])], stack: pushed))
            }
            if automaton.isFinal[state], stack != 0 {
                add(Self.pack(state: stackTop[Int(stack)], stack: stackParent[Int(stack)]))
            }
        }
        result.sort()
        return result
    }

    /// The configurations after reading `byte`.
    private func advance(_ current: [UInt64], byte: UInt8) -> [UInt64] {
        var next: [UInt64] = []
        for configuration in current {
            let state = Self.state(configuration), stack = Self.stack(configuration)
            for edge in Int(automaton.edgeStart[state])..<Int(automaton.edgeStart[state + 1])
            where automaton.edgeLow[edge] <= byte && byte <= automaton.edgeHigh[edge] {
                next.append(Self.pack(state: automaton.edgeTarget[edge], stack: stack))
            }
        }
        return next.isEmpty ? next : closure(of: next)
    }

    private func isComplete(_ set: [UInt64]) -> Bool {
        set.contains { Self.stack($0) == 0 && automaton.isFinal[Self.state($0)] && automaton.ruleOfState[Self.state($0)] == automaton.rootRule }
    }

    /// The output so far is a whole match.
    public var isComplete: Bool { isComplete(configurations) }

    public var isFinished: Bool {
        finished || (isComplete && !canContinue)
    }

    /// Some configuration can still read a byte.
    public var canContinue: Bool {
        configurations.contains { configuration in
            let state = Self.state(configuration)
            return automaton.edgeStart[state] < automaton.edgeStart[state + 1]
        }
    }

    public func allowedTokens() -> TokenMask {
        if let cached = maskCache[configurations] { return cached }
        var mask = TokenMask(vocabularySize: vocabulary.vocabularySize)
        if isComplete { for token in vocabulary.endTokens { mask.insert(token) } }
        walk(node: 0, configurations: configurations, into: &mask)
        if maskCache.count >= Self.maximumCachedMasks { maskCache.removeAll(keepingCapacity: true) }
        maskCache[configurations] = mask
        return mask
    }

    /// Depth-first over the trie: a child is followed while some configuration reads its byte.
    private func walk(node: Int, configurations: [UInt64], into mask: inout TokenMask) {
        for child in Int(vocabulary.childStart[node])..<Int(vocabulary.childStart[node + 1]) {
            let next = advance(configurations, byte: vocabulary.childByte[child])
            guard !next.isEmpty else { continue }
            let childNode = Int(vocabulary.childNode[child])
            for index in Int(vocabulary.tokenStart[childNode])..<Int(vocabulary.tokenStart[childNode + 1]) {
                mask.insert(vocabulary.tokenAt[index])
            }
            walk(node: childNode, configurations: next, into: &mask)
        }
    }

    public func accept(_ token: TokenID) -> Bool {
        guard !finished else { return false }
        if vocabulary.endTokens.contains(token) {
            guard isComplete else { return false }
            finished = true
            return true
        }
        guard let bytes = tokenBytes(token), !bytes.isEmpty else { return false }
        return accept(bytes: bytes)
    }

    /// Feeds text directly (a token's bytes; tests and the benchmark's document walk). Nothing
    /// changes when some byte is refused.
    func accept<Bytes: Sequence<UInt8>>(bytes: Bytes) -> Bool {
        var current = configurations
        for byte in bytes {
            current = advance(current, byte: byte)
            if current.isEmpty { return false }
        }
        configurations = current
        return true
    }

    private func tokenBytes(_ token: TokenID) -> ArraySlice<UInt8>? {
        guard token >= 0, Int(token) < vocabulary.vocabularySize else { return nil }
        return vocabulary.pieces[Int(vocabulary.pieceStart[Int(token)])..<Int(vocabulary.pieceStart[Int(token) + 1])]
    }
}
