import Foundation

/// A frame of variables. `for` iterations and macro calls open a child frame; `if` does not,
/// which is Jinja's scoping (a `set` inside a loop body is gone after the iteration).
final class Scope {
    var variables: [String: Value] = [:]
    let parent: Scope?

    init(parent: Scope?) { self.parent = parent }

    func lookup(_ name: String) -> Value? {
        var scope: Scope? = self
        while let current = scope {
            if let value = current.variables[name] { return value }
            scope = current.parent
        }
        return nil
    }
}

/// Walks the statement tree of one render. Not shared between renders.
final class Interpreter {
    enum Flow { case normal, breakLoop, continueLoop }

    var output = ""
    /// Template line of the statement being executed, for error messages.
    var line = 1
    let now: Date
    let timeZone: TimeZone
    private var callDepth = 0
    private static let maximumCallDepth = 200
    /// A render stops with an error naming the line when it would build a string (its output
    /// included) longer than this, a list longer than `maximumListItems`, or run more loop
    /// iterations than `maximumIterations` in all: a template cannot loop or grow without bound.
    static let maximumStringBytes = 64 << 20
    static let maximumListItems = 10_000_000
    static let maximumIterations = 1_000_000
    private var iterations = 0

    init(now: Date, timeZone: TimeZone) {
        self.now = now
        self.timeZone = timeZone
    }

    // MARK: errors

    func runtimeError(_ message: String) -> JinjaError { .runtime(message, line: line) }
    /// Using an undefined value fails; the sandbox's "unsafe" undefined (what a mutating method
    /// like `list.append` resolves to) fails with a security error instead, as in jinja2.
    func undefinedError(_ message: String) -> JinjaError {
        if message.hasPrefix(Interpreter.unsafePrefix) && message.hasSuffix(Interpreter.unsafeSuffix) {
            return .security(message, line: line)
        }
        return .undefined(message, line: line)
    }

    private static let unsafePrefix = "access to attribute '"
    private static let unsafeSuffix = " object is unsafe."

    private static func unsafe(_ name: String, of value: Value) -> Value {
        .undefined("\(unsafePrefix)\(name)' of '\(value.typeName)'\(unsafeSuffix)")
    }
    func securityError(_ message: String) -> JinjaError { .security(message, line: line) }

    /// Refuses a string of `bytes` bytes (or a width that would make one) past the render's limit.
    func checkStringSize(_ bytes: Int, _ what: String) throws {
        guard bytes <= Interpreter.maximumStringBytes else {
            throw runtimeError("\(what) would build a string of \(bytes) bytes; a template may build at most \(Interpreter.maximumStringBytes)")
        }
    }

    func checkListSize(_ items: Int, _ what: String) throws {
        guard items <= Interpreter.maximumListItems else {
            throw runtimeError("\(what) would build a list of \(items) items; a template may build at most \(Interpreter.maximumListItems)")
        }
    }

    /// `count` copies of something `size` long, refused past the limit before anything is built.
    private func checkRepetition(_ size: Int, _ count: Int, check: (Int, String) throws -> Void) throws {
        let (total, overflow) = size.multipliedReportingOverflow(by: max(0, count))
        try check(overflow ? Int.max : total, "repeating \(size) by \(count)")
    }

    private func emit(_ text: String) throws {
        try checkStringSize(output.utf8.count + text.utf8.count, "the output")
        output += text
    }

    // MARK: statements

    func execute(_ nodes: [Node], in scope: Scope) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let text):
                try emit(text)
            case .output(let expression, let line):
                self.line = line
                try emit(try evaluate(expression, in: scope).pythonString)
            case .conditional(let branches, let otherwise):
                var chosen = otherwise
                for branch in branches {
                    self.line = branch.line
                    if try evaluate(branch.condition, in: scope).isTruthy {
                        chosen = branch.body
                        break
                    }
                }
                let flow = try execute(chosen, in: scope)
                if flow != .normal { return flow }
            case .loop(let loop, let line):
                self.line = line
                try executeLoop(loop, in: scope)
            case .assign(let target, let expression, let line):
                self.line = line
                try assign(target, try evaluate(expression, in: scope), in: scope)
            case .assignBlock(let target, let filters, let body, let line):
                self.line = line
                var value = Value.string(try capture(body, in: Scope(parent: scope)))
                self.line = line
                value = try applyFilterChain(filters, to: value, in: scope)
                try assign(target, value, in: scope)
            case .macro(let definition, _):
                scope.variables[definition.name] = .macro(MacroValue(definition: definition, closure: scope, caller: nil))
            case .callBlock(let callerParameters, let call, let body, let line):
                self.line = line
                guard case .call(let calleeExpression, let argumentExpressions) = call else { break }
                let callee = try evaluate(calleeExpression, in: scope)
                let arguments = try evaluateArguments(argumentExpressions, in: scope)
                let caller = Value.macro(MacroValue(
                    definition: MacroDefinition(name: "caller", parameters: callerParameters, body: body),
                    closure: scope, caller: nil))
                guard case .macro(let macro) = callee else { throw runtimeError("'call' block needs a macro to call") }
                try emit(try invoke(macro, arguments, caller: caller).pythonString)
            case .filterBlock(let filters, let body, let line):
                self.line = line
                let text = try capture(body, in: Scope(parent: scope))
                self.line = line
                try emit(try applyFilterChain(filters, to: .string(text), in: scope).pythonString)
            case .scope(let assignments, let body, let line):
                self.line = line
                let inner = Scope(parent: scope)
                for (name, expression) in assignments { inner.variables[name] = try evaluate(expression, in: scope) }
                let flow = try execute(body, in: inner)
                if flow != .normal { return flow }
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    private func capture(_ body: [Node], in scope: Scope) throws -> String {
        let saved = output
        output = ""
        defer { output = saved }
        _ = try execute(body, in: scope)
        return output
    }

    private func applyFilterChain(_ filters: [FilterCall], to value: Value, in scope: Scope) throws -> Value {
        var result = value
        for filter in filters {
            result = try applyFilter(filter.name, to: result, try evaluateArguments(filter.arguments, in: scope), in: scope)
        }
        return result
    }

    private func executeLoop(_ loop: ForLoop, in scope: Scope) throws {
        try executeLoop(loop, over: try evaluate(loop.iterable, in: scope), depth0: 0, in: scope)
    }

    private func executeLoop(_ loop: ForLoop, over iterable: Value, depth0: Int, in scope: Scope) throws {
        let line = self.line
        var items = try iterate(iterable)
        if let condition = loop.condition {
            items = try items.filter { item in
                let probe = Scope(parent: scope)
                try assign(loop.target, item, in: probe)
                return try evaluate(condition, in: probe).isTruthy
            }
        }
        if items.isEmpty {
            _ = try execute(loop.otherwise, in: Scope(parent: scope))
            return
        }
        // `loop.depth` counts recursive-loop levels only; plain nested loops are each at depth 1.
        let state = LoopState(items: items, depth0: depth0)
        if loop.recursive {
            state.recurse = { [unowned self] children in
                let saved = self.output
                self.output = ""
                defer { self.output = saved }
                try self.executeLoop(loop, over: children, depth0: depth0 + 1, in: scope)
                return .string(self.output)
            }
        }
        for (index, item) in items.enumerated() {
            self.line = line
            iterations += 1
            guard iterations <= Interpreter.maximumIterations else {
                throw runtimeError("the template ran more than \(Interpreter.maximumIterations) loop iterations")
            }
            state.index0 = index
            let iteration = Scope(parent: scope)
            iteration.variables["loop"] = .loop(state)
            try assign(loop.target, item, in: iteration)
            if try execute(loop.body, in: iteration) == .breakLoop { break }
        }
    }

    private func assign(_ target: AssignTarget, _ value: Value, in scope: Scope) throws {
        switch target {
        case .name(let name):
            scope.variables[name] = value
        case .attribute(let owner, let attribute):
            guard case .namespace(let storage) = scope.lookup(owner) ?? .undefined("") else {
                throw runtimeError("cannot assign attribute on non-namespace object '\(owner)'")
            }
            storage.attributes.set(.string(attribute), value)
        case .tuple(let targets):
            let items = try iterate(value)
            guard items.count == targets.count else {
                throw runtimeError(items.count > targets.count
                    ? "too many values to unpack (expected \(targets.count))"
                    : "not enough values to unpack (expected \(targets.count), got \(items.count))")
            }
            for (target, item) in zip(targets, items) { try assign(target, item, in: scope) }
        }
    }

    // MARK: expressions

    func evaluate(_ expression: Expression, in scope: Scope) throws -> Value {
        switch expression {
        case .constant(let constant):
            return Value(constant)
        case .name(let name):
            return scope.lookup(name) ?? .undefined("'\(name)' is undefined")
        case .list(let items):
            return .list(try items.map { try evaluate($0, in: scope) })
        case .tuple(let items):
            return .tuple(try items.map { try evaluate($0, in: scope) })
        case .dict(let pairs):
            var dict = PythonDict()
            for pair in pairs { dict.set(try evaluate(pair.key, in: scope), try evaluate(pair.value, in: scope)) }
            return .dict(dict)
        case .attribute(let base, let name):
            return try attribute(name, of: try evaluate(base, in: scope))
        case .item(let base, let key):
            return try item(try evaluate(key, in: scope), of: try evaluate(base, in: scope))
        case .slice(let base, let start, let stop, let step):
            let value = try evaluate(base, in: scope)
            return try slice(value,
                             start: try start.map { try evaluate($0, in: scope) },
                             stop: try stop.map { try evaluate($0, in: scope) },
                             step: try step.map { try evaluate($0, in: scope) })
        case .call(let callee, let arguments):
            let function = try evaluate(callee, in: scope)
            return try call(function, try evaluateArguments(arguments, in: scope))
        case .filter(let base, let name, let arguments):
            let value = try evaluate(base, in: scope)
            return try applyFilter(name, to: value, try evaluateArguments(arguments, in: scope), in: scope)
        case .test(let base, let name, let arguments, let negated):
            let value = try evaluate(base, in: scope)
            let result = try applyTest(name, to: value, try evaluateArguments(arguments, in: scope), in: scope)
            return .bool(result != negated)
        case .negate(let operand):
            let value = try evaluate(operand, in: scope)
            switch value {
            // -Int.min does not fit: a float, as the binary operators fall back on overflow.
            case .int(let number): return number == .min ? .double(-Double(number)) : .int(-number)
            case .bool(let flag): return .int(flag ? -1 : 0)
            case .double(let number): return .double(-number)
            case .undefined(let message): throw undefinedError(message)
            default: throw runtimeError("bad operand type for unary -: '\(value.typeName)'")
            }
        case .plus(let operand):
            let value = try evaluate(operand, in: scope)
            switch value {
            case .int, .double: return value
            case .bool(let flag): return .int(flag ? 1 : 0)
            case .undefined(let message): throw undefinedError(message)
            default: throw runtimeError("bad operand type for unary +: '\(value.typeName)'")
            }
        case .not(let operand):
            return .bool(!(try evaluate(operand, in: scope).isTruthy))
        case .and(let left, let right):
            let first = try evaluate(left, in: scope)
            return first.isTruthy ? try evaluate(right, in: scope) : first
        case .or(let left, let right):
            let first = try evaluate(left, in: scope)
            return first.isTruthy ? first : try evaluate(right, in: scope)
        case .binary(let op, let left, let right):
            return try binary(op, try evaluate(left, in: scope), try evaluate(right, in: scope))
        case .compare(let first, let operations):
            var left = try evaluate(first, in: scope)
            for (op, rightExpression) in operations {
                let right = try evaluate(rightExpression, in: scope)
                guard try compare(op, left, right) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .concat(let parts):
            var text = ""
            for part in parts {
                let piece = try evaluate(part, in: scope).pythonString
                try checkStringSize(text.utf8.count + piece.utf8.count, "'~'")
                text += piece
            }
            return .string(text)
        case .conditional(let condition, let then, let otherwise):
            if try evaluate(condition, in: scope).isTruthy { return try evaluate(then, in: scope) }
            if let otherwise { return try evaluate(otherwise, in: scope) }
            return .undefined("the inline if-expression on line \(line) evaluated to false and no else section was defined.")
        }
    }

    func evaluateArguments(_ arguments: [Argument], in scope: Scope) throws -> CallArguments {
        var result = CallArguments()
        for argument in arguments {
            let value = try evaluate(argument.value, in: scope)
            if let name = argument.name {
                result.keyword.append((name, value))
            } else {
                result.positional.append(value)
            }
        }
        return result
    }

    // MARK: access

    private static let dictMethods: Set<String> = ["get", "keys", "values", "items", "copy"]
    private static let dictMutators: Set<String> = ["pop", "popitem", "setdefault", "update", "clear"]
    private static let listMethods: Set<String> = ["index", "count", "copy"]
    private static let listMutators: Set<String> = ["append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"]

    func attribute(_ name: String, of value: Value) throws -> Value {
        switch value {
        case .undefined(let message):
            throw undefinedError(message)
        case .dict(let dict):
            if Interpreter.dictMethods.contains(name) { return .boundMethod(value, name) }
            if Interpreter.dictMutators.contains(name) { return Interpreter.unsafe(name, of: value) }
            return dict[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .string:
            if StringMethods.names.contains(name) { return .boundMethod(value, name) }
        case .list, .tuple:
            if Interpreter.listMethods.contains(name) { return .boundMethod(value, name) }
            // `groupby` yields (grouper, list) named tuples.
            if case .tuple(let items) = value, items.count == 2, name == "grouper" || name == "list" {
                return items[name == "grouper" ? 0 : 1]
            }
            if Interpreter.listMutators.contains(name) { return Interpreter.unsafe(name, of: value) }
        case .namespace(let storage):
            return storage.attributes[name] ?? .undefined("'Namespace' object has no attribute '\(name)'")
        case .loop(let state):
            if let result = loopAttribute(name, of: state, value: value) { return result }
        case .none:
            return .undefined("'None' has no attribute '\(name)'")
        default:
            break
        }
        return .undefined("'\(value.typeName) object' has no attribute '\(name)'")
    }

    private func loopAttribute(_ name: String, of state: LoopState, value: Value) -> Value? {
        let length = state.items.count
        switch name {
        case "index": return .int(state.index0 + 1)
        case "index0": return .int(state.index0)
        case "revindex": return .int(length - state.index0)
        case "revindex0": return .int(length - state.index0 - 1)
        case "first": return .bool(state.index0 == 0)
        case "last": return .bool(state.index0 == length - 1)
        case "length": return .int(length)
        case "depth": return .int(state.depth0 + 1)
        case "depth0": return .int(state.depth0)
        case "previtem":
            return state.index0 > 0 ? state.items[state.index0 - 1] : .undefined("there is no previous item")
        case "nextitem":
            return state.index0 + 1 < length ? state.items[state.index0 + 1] : .undefined("there is no next item")
        case "cycle", "changed": return .boundMethod(value, name)
        default: return nil
        }
    }

    func item(_ key: Value, of value: Value) throws -> Value {
        switch value {
        case .undefined(let message):
            throw undefinedError(message)
        case .dict(let dict):
            if let found = dict[key] { return found }
            if case .string(let name) = key { return try attribute(name, of: value) }
            return .undefined("'dict object' has no attribute '\(key.pythonString)'")
        case .list(let items), .tuple(let items):
            if let index = key.integerValue {
                let resolved = index < 0 ? index + items.count : index
                if resolved >= 0 && resolved < items.count { return items[resolved] }
                return .undefined("'\(value.typeName) object' has no element \(index)")
            }
            if case .string(let name) = key { return try attribute(name, of: value) }
        case .string(let text):
            if let index = key.integerValue {
                let scalars = Array(text.unicodeScalars)
                let resolved = index < 0 ? index + scalars.count : index
                if resolved >= 0 && resolved < scalars.count { return .string(String(scalars[resolved])) }
                return .undefined("'str object' has no element \(index)")
            }
            if case .string(let name) = key { return try attribute(name, of: value) }
        case .namespace, .loop:
            if case .string(let name) = key { return try attribute(name, of: value) }
        default:
            break
        }
        return .undefined("'\(value.typeName) object' has no element \(key.pythonRepr)")
    }

    private func sliceBound(_ value: Value?) throws -> Int? {
        guard let value else { return nil }
        if case .none = value { return nil }
        guard let number = value.integerValue else {
            throw runtimeError("slice indices must be integers or None")
        }
        return number
    }

    /// Python's slice index arithmetic (negative bounds count from the end, any step).
    static func sliceIndices(count: Int, start: Int?, stop: Int?, step: Int) -> [Int] {
        func clamp(_ bound: Int?, defaultValue: Int, low: Int, high: Int) -> Int {
            guard var bound else { return defaultValue }
            if bound < 0 { bound += count }
            return min(max(bound, low), high)
        }
        var indices: [Int] = []
        if step > 0 {
            let begin = clamp(start, defaultValue: 0, low: 0, high: count)
            let end = clamp(stop, defaultValue: count, low: 0, high: count)
            if begin < end { indices = Array(stride(from: begin, to: end, by: step)) }
        } else {
            let begin = clamp(start, defaultValue: count - 1, low: -1, high: count - 1)
            let end = clamp(stop, defaultValue: -1, low: -1, high: count - 1)
            if begin > end { indices = Array(stride(from: begin, to: end, by: step)) }
        }
        return indices
    }

    private func slice(_ value: Value, start: Value?, stop: Value?, step: Value?) throws -> Value {
        let step = try sliceBound(step) ?? 1
        guard step != 0 else { throw runtimeError("slice step cannot be zero") }
        let (start, stop) = (try sliceBound(start), try sliceBound(stop))
        switch value {
        case .list(let items):
            return .list(Interpreter.sliceIndices(count: items.count, start: start, stop: stop, step: step).map { items[$0] })
        case .tuple(let items):
            return .tuple(Interpreter.sliceIndices(count: items.count, start: start, stop: stop, step: step).map { items[$0] })
        case .string(let text):
            let scalars = Array(text.unicodeScalars)
            var result = String.UnicodeScalarView()
            for index in Interpreter.sliceIndices(count: scalars.count, start: start, stop: stop, step: step) {
                result.append(scalars[index])
            }
            return .string(String(result))
        case .undefined(let message):
            throw undefinedError(message)
        default:
            return .undefined("'\(value.typeName) object' is not subscriptable")
        }
    }

    /// Python iteration: lists and tuples by item, dicts by key, strings by character.
    func iterate(_ value: Value) throws -> [Value] {
        switch value {
        case .list(let items), .tuple(let items): return items
        case .dict(let dict): return dict.keys
        case .string(let text): return text.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        case .namespace(let storage): return storage.attributes.keys
        default: throw runtimeError("'\(value.typeName)' object is not iterable")
        }
    }

    // MARK: operators

    private func binary(_ op: BinaryOperator, _ left: Value, _ right: Value) throws -> Value {
        if case .undefined(let message) = left { throw undefinedError(message) }
        if case .undefined(let message) = right { throw undefinedError(message) }
        let bothIntegers = left.integerValue != nil && right.integerValue != nil
        switch op {
        case .add:
            switch (left, right) {
            case (.string(let a), .string(let b)):
                try checkStringSize(a.utf8.count + b.utf8.count, "'+'")
                return .string(a + b)
            case (.list(let a), .list(let b)):
                try checkListSize(a.count + b.count, "'+'")
                return .list(a + b)
            case (.tuple(let a), .tuple(let b)):
                try checkListSize(a.count + b.count, "'+'")
                return .tuple(a + b)
            default: break
            }
            if bothIntegers {
                let (sum, overflow) = left.integerValue!.addingReportingOverflow(right.integerValue!)
                if !overflow { return .int(sum) }
            }
            if let a = left.numericValue, let b = right.numericValue { return .double(a + b) }
            if case .string = left {
                throw runtimeError("can only concatenate str (not \"\(right.typeName)\") to str")
            }
            if case .list = left {
                throw runtimeError("can only concatenate list (not \"\(right.typeName)\") to list")
            }
        case .subtract:
            if bothIntegers {
                let (difference, overflow) = left.integerValue!.subtractingReportingOverflow(right.integerValue!)
                if !overflow { return .int(difference) }
            }
            if let a = left.numericValue, let b = right.numericValue { return .double(a - b) }
        case .multiply:
            switch (left, right) {
            case (.string(let text), _) where right.integerValue != nil:
                try checkRepetition(text.utf8.count, right.integerValue!, check: checkStringSize)
                return .string(String(repeating: text, count: max(0, right.integerValue!)))
            case (_, .string(let text)) where left.integerValue != nil:
                try checkRepetition(text.utf8.count, left.integerValue!, check: checkStringSize)
                return .string(String(repeating: text, count: max(0, left.integerValue!)))
            case (.list(let items), _) where right.integerValue != nil:
                try checkRepetition(items.count, right.integerValue!, check: checkListSize)
                return .list(items.isEmpty ? [] : Array([[Value]](repeating: items, count: max(0, right.integerValue!)).joined()))
            case (_, .list(let items)) where left.integerValue != nil:
                try checkRepetition(items.count, left.integerValue!, check: checkListSize)
                return .list(items.isEmpty ? [] : Array([[Value]](repeating: items, count: max(0, left.integerValue!)).joined()))
            default: break
            }
            if bothIntegers {
                let (product, overflow) = left.integerValue!.multipliedReportingOverflow(by: right.integerValue!)
                if !overflow { return .int(product) }
            }
            if let a = left.numericValue, let b = right.numericValue { return .double(a * b) }
        case .divide:
            if let a = left.numericValue, let b = right.numericValue {
                guard b != 0 else { throw runtimeError("division by zero") }
                return .double(a / b)
            }
        case .floorDivide:
            if bothIntegers {
                let (a, b) = (left.integerValue!, right.integerValue!)
                guard b != 0 else { throw runtimeError("integer division or modulo by zero") }
                let (quotient, overflow) = a.dividedReportingOverflow(by: b)
                if overflow { return .double((Double(a) / Double(b)).rounded(.down)) }
                return .int(a % b != 0 && ((a < 0) != (b < 0)) ? quotient - 1 : quotient)
            }
            if let a = left.numericValue, let b = right.numericValue {
                guard b != 0 else { throw runtimeError("float floor division by zero") }
                return .double((a / b).rounded(.down))
            }
        case .modulo:
            if case .string(let format) = left {
                let arguments: [Value]
                if case .tuple(let items) = right { arguments = items } else { arguments = [right] }
                return .string(try PrintfFormatter.format(format, arguments, mapping: right, interpreter: self))
            }
            if bothIntegers {
                let (a, b) = (left.integerValue!, right.integerValue!)
                guard b != 0 else { throw runtimeError("integer division or modulo by zero") }
                // Int.min % -1 overflows in Swift; its remainder is 0.
                let remainder = a.remainderReportingOverflow(dividingBy: b).partialValue
                return .int(remainder != 0 && ((remainder < 0) != (b < 0)) ? remainder + b : remainder)
            }
            if let a = left.numericValue, let b = right.numericValue {
                guard b != 0 else { throw runtimeError("float modulo") }
                var remainder = fmod(a, b)
                if remainder != 0 && ((remainder < 0) != (b < 0)) { remainder += b }
                return .double(remainder)
            }
        case .power:
            if bothIntegers, right.integerValue! >= 0 {
                // Exponentiation by squaring; on overflow fall back to a float (Python would grow the int).
                var (result, base, exponent) = (1, left.integerValue!, right.integerValue!)
                let fallback = Value.double(pow(Double(base), Double(exponent)))
                while exponent > 0 {
                    if exponent & 1 == 1 {
                        let (product, overflow) = result.multipliedReportingOverflow(by: base)
                        if overflow { return fallback }
                        result = product
                    }
                    exponent >>= 1
                    if exponent > 0 {
                        let (square, overflow) = base.multipliedReportingOverflow(by: base)
                        if overflow { return fallback }
                        base = square
                    }
                }
                return .int(result)
            }
            if let a = left.numericValue, let b = right.numericValue { return .double(pow(a, b)) }
        }
        throw runtimeError("unsupported operand type(s) for \(op.rawValue): '\(left.typeName)' and '\(right.typeName)'")
    }

    func contains(_ container: Value, _ element: Value) throws -> Bool {
        switch container {
        case .string(let text):
            guard case .string(let needle) = element else {
                if case .undefined(let message) = element { throw undefinedError(message) }
                throw runtimeError("'in <string>' requires string as left operand, not \(element.typeName)")
            }
            return needle.isEmpty || text.unicodeScalars.firstRange(of: needle.unicodeScalars) != nil
        case .list(let items), .tuple(let items):
            return items.contains { $0.pythonEquals(element) }
        case .dict(let dict):
            return dict[element] != nil
        case .namespace(let storage):
            return storage.attributes[element] != nil
        case .undefined:
            return false
        default:
            throw runtimeError("argument of type '\(container.typeName)' is not iterable")
        }
    }

    private func compare(_ op: ComparisonOperator, _ left: Value, _ right: Value) throws -> Bool {
        switch op {
        case .equal: return left.pythonEquals(right)
        case .notEqual: return !left.pythonEquals(right)
        case .contains: return try contains(right, left)
        case .notContains: return !(try contains(right, left))
        default:
            if case .undefined(let message) = left { throw undefinedError(message) }
            if case .undefined(let message) = right { throw undefinedError(message) }
            guard let order = left.pythonCompare(right) else {
                throw runtimeError("'\(op.rawValue)' not supported between instances of '\(left.typeName)' and '\(right.typeName)'")
            }
            switch op {
            case .less: return order == .orderedAscending
            case .lessOrEqual: return order != .orderedDescending
            case .greater: return order == .orderedDescending
            default: return order != .orderedAscending
            }
        }
    }

    // MARK: calls

    func call(_ function: Value, _ arguments: CallArguments) throws -> Value {
        switch function {
        case .macro(let macro):
            var arguments = arguments
            var caller = macro.caller
            if let index = arguments.keyword.firstIndex(where: { $0.0 == "caller" }) {
                caller = arguments.keyword.remove(at: index).1
            }
            return try invoke(macro, arguments, caller: caller)
        case .function(let builtin):
            return try builtin.body(self, arguments)
        case .boundMethod(let owner, let name):
            return try callMethod(name, on: owner, arguments)
        case .loop(let state):
            guard let recurse = state.recurse else {
                throw runtimeError("Tried to call non recursive loop.  Maybe you forgot the 'recursive' modifier.")
            }
            guard arguments.positional.count == 1 else { throw runtimeError("loop() takes exactly one argument") }
            return try recurse(arguments.positional[0])
        case .undefined(let message):
            throw undefinedError(message)
        default:
            throw runtimeError("'\(function.typeName)' object is not callable")
        }
    }

    func invoke(_ macro: MacroValue, _ arguments: CallArguments, caller: Value?) throws -> Value {
        guard callDepth < Interpreter.maximumCallDepth else {
            throw runtimeError("macro '\(macro.definition.name)' recursed more than \(Interpreter.maximumCallDepth) levels deep")
        }
        callDepth += 1
        let callLine = line
        defer {
            callDepth -= 1
            line = callLine
        }
        let scope = Scope(parent: macro.closure)
        let parameters = macro.definition.parameters
        var keyword = arguments.keyword
        for (position, parameter) in parameters.enumerated() {
            if position < arguments.positional.count {
                scope.variables[parameter.name] = arguments.positional[position]
            } else if let index = keyword.firstIndex(where: { $0.0 == parameter.name }) {
                scope.variables[parameter.name] = keyword.remove(at: index).1
            } else if let defaultValue = parameter.defaultValue {
                scope.variables[parameter.name] = try evaluate(defaultValue, in: scope)
            } else {
                scope.variables[parameter.name] = .undefined("parameter '\(parameter.name)' was not provided")
            }
        }
        scope.variables["varargs"] = .tuple(Array(arguments.positional.dropFirst(parameters.count)))
        var extra = PythonDict()
        for (name, value) in keyword { extra.set(.string(name), value) }
        scope.variables["kwargs"] = .dict(extra)
        if let caller { scope.variables["caller"] = caller }
        return .string(try capture(macro.definition.body, in: scope))
    }
}
