/// The compiled grammar: one epsilon-free byte automaton per rule, with call edges into other
/// rules (a recursive transition network, which is how `$ref` recursion stays finite). States
/// are numbered globally and stored as flat arrays so the matcher's inner loop reads plain
/// integers. Immutable once built.
public final class GrammarAutomaton: Sendable {
    /// Byte edges of state s are `edgeLow/High/Target[edgeStart[s]..<edgeStart[s + 1]]`.
    let edgeStart: [Int32]
    let edgeLow: [UInt8]
    let edgeHigh: [UInt8]
    let edgeTarget: [Int32]
    /// Call edges of state s: enter `callRule`, and continue at `callReturn` when it ends.
    let callStart: [Int32]
    let callRule: [Int32]
    let callReturn: [Int32]
    /// True when the state's rule may end here.
    let isFinal: [Bool]
    let ruleOfState: [Int32]
    let ruleStart: [Int32]
    /// The rule the whole output must match.
    let rootRule: Int32
    /// The fewest bytes from each state to the end of its rule (rule calls included), or
    /// `unreachable`: how far the output is from complete, for the token budget.
    let distance: [Int32]
    static let unreachable = Int32.max / 4
    /// Rules built the same way in every grammar (and calling no other rule), by name: their
    /// states' masks are shared through the vocabulary.
    let sharedRuleNames: [Int32: String]

    var stateCount: Int { isFinal.count }

    /// The most automaton states a grammar may have (large maxLength / maxItems unroll).
    static let maximumStates = 400_000

    init(rules: [GrammarNode], root: Int, sharedRules: [Int: String] = [:]) throws(GrammarError) {
        var builder = ThompsonBuilder()
        var starts: [Int] = [], accepts: [Int] = []
        for index in rules.indices {
            let start = builder.newState(rule: index)
            starts.append(start)
            let end = builder.build(rules[index], from: start, rule: index)
            accepts.append(end)
            if builder.ruleOf.count > Self.maximumStates { throw .tooLarge(path: "$") }
        }
        // The states that survive epsilon removal: rule starts, byte-edge targets, call returns.
        var important = Set(starts)
        for edges in builder.bytes { for edge in edges { important.insert(edge.target) } }
        for calls in builder.calls { for call in calls { important.insert(call.returnState) } }
        let ordered = important.sorted()
        var number = [Int: Int32]()
        for (index, state) in ordered.enumerated() { number[state] = Int32(index) }

        var edgeStart: [Int32] = [0], edgeLow: [UInt8] = [], edgeHigh: [UInt8] = [], edgeTarget: [Int32] = []
        var callStart: [Int32] = [0], callRule: [Int32] = [], callReturn: [Int32] = []
        var isFinal: [Bool] = [], ruleOfState: [Int32] = []
        var visited = [Int](repeating: -1, count: builder.ruleOf.count)
        for (index, state) in ordered.enumerated() {
            // Epsilon closure of the state.
            var closure: [Int] = [], pending = [state]
            visited[state] = index
            while let next = pending.popLast() {
                closure.append(next)
                for target in builder.epsilon[next] where visited[target] != index {
                    visited[target] = index
                    pending.append(target)
                }
            }
            let rule = builder.ruleOf[state]
            var seenEdges = Set<[Int32]>(), seenCalls = Set<[Int32]>()
            for member in closure.sorted() {
                for edge in builder.bytes[member] {
                    let key: [Int32] = [Int32(edge.low), Int32(edge.high), number[edge.target]!]
                    if seenEdges.insert(key).inserted {
                        edgeLow.append(edge.low); edgeHigh.append(edge.high); edgeTarget.append(key[2])
                    }
                }
                for call in builder.calls[member] {
                    let key: [Int32] = [Int32(call.rule), number[call.returnState]!]
                    if seenCalls.insert(key).inserted { callRule.append(key[0]); callReturn.append(key[1]) }
                }
            }
            edgeStart.append(Int32(edgeLow.count))
            callStart.append(Int32(callRule.count))
            isFinal.append(closure.contains(accepts[rule]))
            ruleOfState.append(Int32(rule))
        }
        self.edgeStart = edgeStart
        self.edgeLow = edgeLow
        self.edgeHigh = edgeHigh
        self.edgeTarget = edgeTarget
        self.callStart = callStart
        self.callRule = callRule
        self.callReturn = callReturn
        self.isFinal = isFinal
        self.ruleOfState = ruleOfState
        self.ruleStart = starts.map { number[$0]! }
        self.rootRule = Int32(root)
        sharedRuleNames = Dictionary(uniqueKeysWithValues: sharedRules.map { (Int32($0.key), $0.value) })
        distance = Self.distances(edgeStart: edgeStart, edgeTarget: edgeTarget, callStart: callStart, callRule: callRule,
                                  callReturn: callReturn, isFinal: isFinal, ruleStart: ruleStart)
    }

    /// Shortest paths to each rule's end, relaxed to a fixed point (a call costs the callee's
    /// shortest match). States are numbered in build order, so backward sweeps converge fast.
    private static func distances(edgeStart: [Int32], edgeTarget: [Int32], callStart: [Int32], callRule: [Int32],
                                  callReturn: [Int32], isFinal: [Bool], ruleStart: [Int32]) -> [Int32] {
        var distance = isFinal.map { $0 ? Int32(0) : unreachable }
        var changed = true
        while changed {
            changed = false
            for state in distance.indices.reversed() {
                var best = distance[state]
                for edge in Int(edgeStart[state])..<Int(edgeStart[state + 1]) {
                    best = min(best, 1 + distance[Int(edgeTarget[edge])])
                }
                for call in Int(callStart[state])..<Int(callStart[state + 1]) {
                    let through = distance[Int(ruleStart[Int(callRule[call])])] + distance[Int(callReturn[call])]
                    best = min(best, min(through, unreachable))
                }
                if best < distance[state] {
                    distance[state] = best
                    changed = true
                }
            }
        }
        return distance
    }
}

/// Thompson construction with epsilon edges, removed by `GrammarAutomaton.init`.
private struct ThompsonBuilder {
    struct Edge { var low: UInt8; var high: UInt8; var target: Int }
    struct Call { var rule: Int; var returnState: Int }
    var bytes: [[Edge]] = []
    var epsilon: [[Int]] = []
    var calls: [[Call]] = []
    var ruleOf: [Int] = []

    mutating func newState(rule: Int) -> Int {
        bytes.append([]); epsilon.append([]); calls.append([]); ruleOf.append(rule)
        return ruleOf.count - 1
    }

    /// Builds `node` starting at `from`; returns the state where it ends.
    mutating func build(_ node: GrammarNode, from: Int, rule: Int) -> Int {
        switch node {
        case .literal(let values):
            var current = from
            for value in values {
                let next = newState(rule: rule)
                bytes[current].append(Edge(low: value, high: value, target: next))
                current = next
            }
            return current
        case .byteSet(let ranges):
            let next = newState(rule: rule)
            for range in ranges { bytes[from].append(Edge(low: range.lowerBound, high: range.upperBound, target: next)) }
            return next
        case .sequence(let parts):
            var current = from
            for part in parts { current = build(part, from: current, rule: rule) }
            return current
        case .choice(let alternatives):
            let end = newState(rule: rule)
            for alternative in alternatives {
                // A fresh entry per branch, so a loop inside one branch cannot lead into another.
                let entry = newState(rule: rule)
                epsilon[from].append(entry)
                epsilon[build(alternative, from: entry, rule: rule)].append(end)
            }
            return end
        case .repeating(let body, let minimum, let maximum):
            var current = from
            for _ in 0..<minimum {
                let entry = newState(rule: rule)
                epsilon[current].append(entry)
                current = build(body, from: entry, rule: rule)
            }
            if let maximum {
                let end = newState(rule: rule)
                epsilon[current].append(end)
                for _ in minimum..<max(maximum, minimum) {
                    let entry = newState(rule: rule)
                    epsilon[current].append(entry)
                    current = build(body, from: entry, rule: rule)
                    epsilon[current].append(end)
                }
                return end
            }
            let loop = newState(rule: rule)
            epsilon[current].append(loop)
            let entry = newState(rule: rule)
            epsilon[loop].append(entry)
            epsilon[build(body, from: entry, rule: rule)].append(loop)
            let end = newState(rule: rule)
            epsilon[loop].append(end)
            return end
        case .rule(let callee):
            let next = newState(rule: rule)
            calls[from].append(Call(rule: callee, returnState: next))
            return next
        }
    }
}
