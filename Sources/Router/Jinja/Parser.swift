/// Recursive-descent parser producing the statement tree; precedence follows Jinja's parser
/// (filters and tests bind tighter than arithmetic, `**` tighter than unary minus binds to it).
struct Parser {
    private let tokens: [Token]
    private var index = 0
    private var loopDepth = 0
    /// Blocks inside blocks, and parenthesised or unary expressions inside each other.
    private var nesting = 0
    static let maximumNesting = 100
    /// Inside an `if` statement or a conditional expression (jinja2's "soft" frame), an unknown
    /// filter or test is an error only when that code runs; a `for`, `macro`, `call` or
    /// `filter` block makes its body strict again, as in jinja2 3.
    private var soft = false
    /// Unknown filters and tests met outside a soft frame, thrown once the template is parsed
    /// (a conditional expression's first branch turns out soft only at its `if`).
    private var unknownNames: [JinjaError] = []

    private mutating func nest() throws {
        nesting += 1
        guard nesting <= Parser.maximumNesting else { throw fail("nesting deeper than \(Parser.maximumNesting) levels") }
    }

    init(tokens: [Token]) { self.tokens = tokens }

    static func parse(_ source: String) throws -> [Node] {
        var parser = Parser(tokens: try Lexer.tokenize(source))
        let (nodes, terminator) = try parser.parseNodes(until: [])
        if let terminator {
            throw JinjaError.syntax("unexpected '\(terminator)'", line: parser.current.line)
        }
        if let unknown = parser.unknownNames.first { throw unknown }
        return nodes
    }

    private var current: Token { tokens[index] }

    private mutating func advance() -> Token {
        let token = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return token
    }

    private func fail(_ message: String) -> JinjaError {
        .syntax(message, line: current.line)
    }

    private func describe(_ kind: Token.Kind) -> String {
        switch kind {
        case .text: "template data"
        case .variableBegin: "'{{'"
        case .variableEnd: "'}}'"
        case .blockBegin: "'{%'"
        case .blockEnd: "'%}'"
        case .name(let name): "'\(name)'"
        case .string: "string literal"
        case .integer, .float: "number"
        case .op(let op): "'\(op)'"
        case .end: "end of template"
        }
    }

    private func isOp(_ op: String) -> Bool {
        if case .op(op) = current.kind { return true }
        return false
    }

    private func isName(_ name: String) -> Bool {
        if case .name(name) = current.kind { return true }
        return false
    }

    private mutating func skipOp(_ op: String) -> Bool {
        if isOp(op) { _ = advance(); return true }
        return false
    }

    private mutating func skipName(_ name: String) -> Bool {
        if isName(name) { _ = advance(); return true }
        return false
    }

    private mutating func expectOp(_ op: String) throws {
        guard skipOp(op) else { throw fail("expected '\(op)', got \(describe(current.kind))") }
    }

    private mutating func expectName() throws -> String {
        guard case .name(let name) = current.kind else { throw fail("expected a name, got \(describe(current.kind))") }
        _ = advance()
        return name
    }

    private mutating func expectBlockEnd() throws {
        guard case .blockEnd = current.kind else { throw fail("expected end of statement block, got \(describe(current.kind))") }
        _ = advance()
    }

    // MARK: statements

    /// Parses nodes until a block tag whose keyword is in `terminators`; returns that keyword
    /// (consumed, the block's remaining tokens are left for the caller) or nil at end of input.
    private mutating func parseNodes(until terminators: Set<String>) throws -> ([Node], String?) {
        try nest()
        defer { nesting -= 1 }
        var nodes: [Node] = []
        while true {
            let token = current
            switch token.kind {
            case .end:
                return (nodes, nil)
            case .text(let text):
                _ = advance()
                nodes.append(.text(text))
            case .variableBegin:
                _ = advance()
                let expression = try parseTuple()
                guard case .variableEnd = current.kind else {
                    throw fail("expected end of print statement, got \(describe(current.kind))")
                }
                _ = advance()
                nodes.append(.output(expression, line: token.line))
            case .blockBegin:
                _ = advance()
                guard case .name(let keyword) = current.kind else { throw fail("tag name expected") }
                if terminators.contains(keyword) {
                    _ = advance()
                    return (nodes, keyword)
                }
                nodes.append(try parseStatement())
            default:
                throw fail("unexpected \(describe(token.kind))")
            }
        }
    }

    private mutating func parseBody(until terminators: Set<String>, opener: String, line: Int) throws -> ([Node], String) {
        let (nodes, terminator) = try parseNodes(until: terminators)
        guard let terminator else {
            throw JinjaError.syntax(
                "unexpected end of template; the '\(opener)' block opened at line \(line) was never closed", line: current.line)
        }
        return (nodes, terminator)
    }

    private mutating func parseStatement() throws -> Node {
        let line = current.line
        let keyword = try expectName()
        let outerSoft = soft
        defer { soft = outerSoft }
        switch keyword {
        case "if":
            soft = true
            return try parseIf(line: line)
        case "for", "macro", "call", "filter":
            soft = false
            switch keyword {
            case "for": return try parseFor(line: line)
            case "macro": return try parseMacro(line: line)
            case "call": return try parseCall(line: line)
            default: return try parseFilterBlock(line: line)
            }
        case "set": return try parseSet(line: line)
        case "with": return try parseWith(line: line)
        case "generation":
            // transformers' assistant-mask extension: renders its body unchanged.
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endgeneration"], opener: "generation", line: line)
            try expectBlockEnd()
            return .scope(assignments: [], body: body, line: line)
        case "break", "continue":
            guard loopDepth > 0 else { throw JinjaError.syntax("'\(keyword)' outside of a loop", line: line) }
            try expectBlockEnd()
            return keyword == "break" ? .breakLoop(line: line) : .continueLoop(line: line)
        default:
            throw JinjaError.syntax("encountered unknown tag '\(keyword)'", line: line)
        }
    }

    private mutating func parseIf(line: Int) throws -> Node {
        var branches: [(condition: Expression, body: [Node], line: Int)] = []
        var condition = try parseTuple(allowConditional: true)
        var conditionLine = line
        while true {
            try expectBlockEnd()
            let (body, terminator) = try parseBody(until: ["elif", "else", "endif"], opener: "if", line: line)
            branches.append((condition, body, conditionLine))
            switch terminator {
            case "elif":
                conditionLine = tokens[index - 1].line
                condition = try parseTuple(allowConditional: true)
            case "else":
                try expectBlockEnd()
                let (otherwise, _) = try parseBody(until: ["endif"], opener: "if", line: line)
                try expectBlockEnd()
                return .conditional(branches: branches, otherwise: otherwise)
            default:
                try expectBlockEnd()
                return .conditional(branches: branches, otherwise: [])
            }
        }
    }

    private mutating func parseAssignTarget(allowAttribute: Bool) throws -> AssignTarget {
        var targets: [AssignTarget] = []
        var sawComma = false
        repeat {
            if !targets.isEmpty && (isName("in") || isOp("=") || current.kind == .blockEnd) { break }
            let name = try expectName()
            if allowAttribute, skipOp(".") {
                targets.append(.attribute(name, try expectName()))
            } else {
                targets.append(.name(name))
            }
            if isOp(",") { sawComma = true }
        } while skipOp(",")
        return sawComma ? .tuple(targets) : targets[0]
    }

    private mutating func parseFor(line: Int) throws -> Node {
        let target = try parseAssignTarget(allowAttribute: false)
        guard skipName("in") else { throw fail("expected 'in' in for loop") }
        let iterable = try parseTuple(allowConditional: false)
        var condition: Expression?
        if skipName("if") { condition = try parseTuple(allowConditional: true) }
        let recursive = skipName("recursive")
        try expectBlockEnd()
        loopDepth += 1
        let (body, terminator) = try parseBody(until: ["endfor", "else"], opener: "for", line: line)
        loopDepth -= 1
        var otherwise: [Node] = []
        if terminator == "else" {
            try expectBlockEnd()
            (otherwise, _) = try parseBody(until: ["endfor"], opener: "for", line: line)
        }
        try expectBlockEnd()
        return .loop(ForLoop(target: target, iterable: iterable, condition: condition, body: body,
                             otherwise: otherwise, recursive: recursive), line: line)
    }

    private mutating func parseFilterChain() throws -> [FilterCall] {
        var filters: [FilterCall] = []
        repeat {
            let nameLine = current.line
            var name = try expectName()
            while skipOp(".") { name += "." + (try expectName()) }
            requireKnown(name, in: Interpreter.filterNames, "No filter named '\(name)'.", line: nameLine)
            let arguments = isOp("(") ? try parseCallArguments() : []
            filters.append(FilterCall(name: name, arguments: arguments))
        } while skipOp("|")
        return filters
    }

    private mutating func parseSet(line: Int) throws -> Node {
        let target = try parseAssignTarget(allowAttribute: true)
        if skipOp("=") {
            let value = try parseTuple()
            try expectBlockEnd()
            return .assign(target, value, line: line)
        }
        var filters: [FilterCall] = []
        if skipOp("|") { filters = try parseFilterChain() }
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endset"], opener: "set", line: line)
        try expectBlockEnd()
        return .assignBlock(target, filters: filters, body: body, line: line)
    }

    private mutating func parseParameters() throws -> [Parameter] {
        var parameters: [Parameter] = []
        try expectOp("(")
        while !skipOp(")") {
            if !parameters.isEmpty { try expectOp(",") }
            if skipOp(")") { break }
            let name = try expectName()
            let defaultValue = skipOp("=") ? try parseExpression() : nil
            parameters.append(Parameter(name: name, defaultValue: defaultValue))
        }
        return parameters
    }

    private mutating func parseMacro(line: Int) throws -> Node {
        let name = try expectName()
        let parameters = try parseParameters()
        try expectBlockEnd()
        let savedDepth = loopDepth
        loopDepth = 0
        let (body, _) = try parseBody(until: ["endmacro"], opener: "macro", line: line)
        loopDepth = savedDepth
        if case .name = current.kind { _ = advance() }  // `{% endmacro name %}`
        try expectBlockEnd()
        return .macro(MacroDefinition(name: name, parameters: parameters, body: body), line: line)
    }

    private mutating func parseCall(line: Int) throws -> Node {
        let callerParameters = isOp("(") ? try parseParameters() : []
        let call = try parseExpression()
        guard case .call = call else { throw JinjaError.syntax("expected a macro call after 'call'", line: line) }
        try expectBlockEnd()
        let savedDepth = loopDepth
        loopDepth = 0
        let (body, _) = try parseBody(until: ["endcall"], opener: "call", line: line)
        loopDepth = savedDepth
        try expectBlockEnd()
        return .callBlock(callerParameters: callerParameters, call: call, body: body, line: line)
    }

    private mutating func parseFilterBlock(line: Int) throws -> Node {
        let filters = try parseFilterChain()
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endfilter"], opener: "filter", line: line)
        try expectBlockEnd()
        return .filterBlock(filters, body: body, line: line)
    }

    private mutating func parseWith(line: Int) throws -> Node {
        var assignments: [(String, Expression)] = []
        while current.kind != .blockEnd {
            if !assignments.isEmpty { try expectOp(",") }
            let name = try expectName()
            try expectOp("=")
            assignments.append((name, try parseExpression()))
        }
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endwith"], opener: "with", line: line)
        try expectBlockEnd()
        return .scope(assignments: assignments, body: body, line: line)
    }

    // MARK: expressions

    /// An expression, or a bare tuple when commas follow (`{{ a, b }}`, `set x = 1, 2`).
    private mutating func parseTuple(allowConditional: Bool = true) throws -> Expression {
        let first = allowConditional ? try parseExpression() : try parseOr()
        guard isOp(",") else { return first }
        var items = [first]
        while skipOp(",") {
            if current.kind == .blockEnd || current.kind == .variableEnd || isOp(")") { break }
            items.append(allowConditional ? try parseExpression() : try parseOr())
        }
        return .tuple(items)
    }

    private mutating func parseExpression() throws -> Expression {
        try nest()
        defer { nesting -= 1 }
        let firstUnknown = unknownNames.count
        var expression = try parseOr()
        while skipName("if") {
            // Every part of a conditional expression is soft, the branch already read too.
            unknownNames.removeSubrange(firstUnknown...)
            let outerSoft = soft
            soft = true
            defer { soft = outerSoft }
            let condition = try parseOr()
            let otherwise = skipName("else") ? try parseExpression() : nil
            expression = .conditional(condition: condition, then: expression, otherwise: otherwise)
        }
        return expression
    }

    /// An unknown filter or test name: a template error unless in a soft frame, where the
    /// interpreter fails only if the call is reached.
    private mutating func requireKnown(_ name: String, in known: Set<String>, _ message: String, line: Int) {
        guard !known.contains(name), !soft else { return }
        unknownNames.append(JinjaError.syntax(message, line: line))
    }

    private mutating func parseOr() throws -> Expression {
        var left = try parseAnd()
        while skipName("or") { left = .or(left, try parseAnd()) }
        return left
    }

    private mutating func parseAnd() throws -> Expression {
        var left = try parseNot()
        while skipName("and") { left = .and(left, try parseNot()) }
        return left
    }

    private mutating func parseNot() throws -> Expression {
        if skipName("not") {
            try nest()
            defer { nesting -= 1 }
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> Expression {
        let left = try parseMath1()
        var operations: [(ComparisonOperator, Expression)] = []
        while true {
            if case .op(let op) = current.kind, let comparison = ComparisonOperator(rawValue: op),
                comparison != .contains, comparison != .notContains
            {
                _ = advance()
                operations.append((comparison, try parseMath1()))
            } else if skipName("in") {
                operations.append((.contains, try parseMath1()))
            } else if isName("not"), case .name("in") = tokens[min(index + 1, tokens.count - 1)].kind {
                _ = advance()
                _ = advance()
                operations.append((.notContains, try parseMath1()))
            } else {
                break
            }
        }
        return operations.isEmpty ? left : .compare(left, operations)
    }

    private mutating func parseMath1() throws -> Expression {
        var left = try parseConcat()
        while true {
            if skipOp("+") {
                left = .binary(.add, left, try parseConcat())
            } else if skipOp("-") {
                left = .binary(.subtract, left, try parseConcat())
            } else {
                return left
            }
        }
    }

    private mutating func parseConcat() throws -> Expression {
        var parts = [try parseMath2()]
        while skipOp("~") { parts.append(try parseMath2()) }
        return parts.count == 1 ? parts[0] : .concat(parts)
    }

    private mutating func parseMath2() throws -> Expression {
        var left = try parsePower()
        while true {
            guard case .op(let op) = current.kind, op != "**", op != "+", op != "-",
                let binary = BinaryOperator(rawValue: op)
            else { return left }
            _ = advance()
            left = .binary(binary, left, try parsePower())
        }
    }

    private mutating func parsePower() throws -> Expression {
        var left = try parseUnary(withFilter: true)
        while skipOp("**") { left = .binary(.power, left, try parseUnary(withFilter: true)) }
        return left
    }

    private mutating func parseUnary(withFilter: Bool) throws -> Expression {
        try nest()
        defer { nesting -= 1 }
        var expression: Expression
        if skipOp("-") {
            expression = .negate(try parseUnary(withFilter: false))
        } else if skipOp("+") {
            expression = .plus(try parseUnary(withFilter: false))
        } else {
            expression = try parsePrimary()
        }
        expression = try parsePostfix(expression)
        if withFilter { expression = try parseFilterExpression(expression) }
        return expression
    }

    private mutating func parsePrimary() throws -> Expression {
        let token = current
        switch token.kind {
        case .name(let name):
            _ = advance()
            switch name {
            case "true", "True": return .constant(.bool(true))
            case "false", "False": return .constant(.bool(false))
            case "none", "None": return .constant(.none)
            default: return .name(name)
            }
        case .string(var value):
            _ = advance()
            while case .string(let next) = current.kind {  // adjacent literals concatenate
                value += next
                _ = advance()
            }
            return .constant(.string(value))
        case .integer(let value):
            _ = advance()
            return .constant(.int(value))
        case .float(let value):
            _ = advance()
            return .constant(.double(value))
        case .op("("):
            _ = advance()
            if skipOp(")") { return .tuple([]) }
            let first = try parseExpression()
            if skipOp(")") { return first }
            var items = [first]
            while skipOp(",") {
                if isOp(")") { break }
                items.append(try parseExpression())
            }
            try expectOp(")")
            return .tuple(items)
        case .op("["):
            _ = advance()
            var items: [Expression] = []
            while !skipOp("]") {
                if !items.isEmpty { try expectOp(",") }
                if skipOp("]") { break }
                items.append(try parseExpression())
            }
            return .list(items)
        case .op("{"):
            _ = advance()
            var pairs: [(key: Expression, value: Expression)] = []
            while !skipOp("}") {
                if !pairs.isEmpty { try expectOp(",") }
                if skipOp("}") { break }
                let key = try parseExpression()
                try expectOp(":")
                pairs.append((key, try parseExpression()))
            }
            return .dict(pairs)
        default:
            throw fail("unexpected \(describe(token.kind))")
        }
    }

    private mutating func parsePostfix(_ base: Expression) throws -> Expression {
        var expression = base
        while true {
            if skipOp(".") {
                switch current.kind {
                case .name(let name):
                    _ = advance()
                    expression = .attribute(expression, name)
                case .integer(let value):
                    _ = advance()
                    expression = .item(expression, .constant(.int(value)))
                default:
                    throw fail("expected name or number after '.'")
                }
            } else if skipOp("[") {
                expression = try parseSubscript(expression)
            } else if isOp("(") {
                expression = .call(expression, try parseCallArguments())
            } else {
                return expression
            }
        }
    }

    private mutating func parseSubscript(_ base: Expression) throws -> Expression {
        var parts: [Expression?] = []
        var isSlice = false
        var currentPart: Expression?
        while true {
            if skipOp("]") {
                parts.append(currentPart)
                break
            }
            if skipOp(":") {
                isSlice = true
                parts.append(currentPart)
                currentPart = nil
                continue
            }
            guard currentPart == nil else { throw fail("expected ']' or ':' in subscript") }
            currentPart = try parseExpression()
        }
        if !isSlice {
            guard let key = parts[0] else { throw fail("expected an expression in subscript") }
            return .item(base, key)
        }
        guard parts.count <= 3 else { throw fail("too many ':' in slice") }
        return .slice(base, start: parts[0], stop: parts.count > 1 ? parts[1] : nil, step: parts.count > 2 ? parts[2] : nil)
    }

    private mutating func parseCallArguments() throws -> [Argument] {
        try expectOp("(")
        var arguments: [Argument] = []
        while !skipOp(")") {
            if !arguments.isEmpty { try expectOp(",") }
            if skipOp(")") { break }
            if case .name(let name) = current.kind, case .op("=") = tokens[min(index + 1, tokens.count - 1)].kind {
                _ = advance()
                _ = advance()
                arguments.append(Argument(name: name, value: try parseExpression()))
            } else {
                arguments.append(Argument(name: nil, value: try parseExpression()))
            }
        }
        return arguments
    }

    private mutating func parseFilterExpression(_ base: Expression) throws -> Expression {
        var expression = base
        while true {
            if skipOp("|") {
                let nameLine = current.line
                var name = try expectName()
                while skipOp(".") { name += "." + (try expectName()) }
                requireKnown(name, in: Interpreter.filterNames, "No filter named '\(name)'.", line: nameLine)
                let arguments = isOp("(") ? try parseCallArguments() : []
                expression = .filter(expression, name: name, arguments)
            } else if skipName("is") {
                let negated = skipName("not")
                let nameLine = current.line
                var name: String
                if case .name("none") = current.kind { _ = advance(); name = "none" }
                else if case .name("true") = current.kind { _ = advance(); name = "true" }
                else if case .name("false") = current.kind { _ = advance(); name = "false" }
                else if case .op(let op) = current.kind, ["==", "!=", "<", "<=", ">", ">="].contains(op) { _ = advance(); name = op }
                else { name = try expectName() }
                while skipOp(".") { name += "." + (try expectName()) }
                requireKnown(name, in: Interpreter.testNames, "No test named '\(name)'.", line: nameLine)
                var arguments: [Argument] = []
                if isOp("(") {
                    arguments = try parseCallArguments()
                } else if startsBareTestArgument() {
                    let argument = try parsePostfix(try parsePrimary())
                    arguments = [Argument(name: nil, value: argument)]
                }
                expression = .test(expression, name: name, arguments, negated: negated)
            } else if isOp("(") {
                expression = .call(expression, try parseCallArguments())
            } else {
                return expression
            }
        }
    }

    /// `x is divisibleby 3`: a test may take one argument without parentheses.
    private func startsBareTestArgument() -> Bool {
        switch current.kind {
        case .name(let name): return !["else", "or", "and", "is", "if", "in", "not"].contains(name)
        case .string, .integer, .float: return true
        case .op(let op): return op == "[" || op == "{"
        default: return false
        }
    }
}
