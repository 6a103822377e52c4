/// Why a template could not be parsed or rendered, with the template line it happened on.
public enum JinjaError: Error, CustomStringConvertible, Equatable {
    /// The template text is not valid Jinja.
    case syntax(String, line: Int)
    /// The template called `raise_exception(message)`.
    case raised(String, line: Int)
    /// Use of an undefined value where a value is needed (attribute, call, arithmetic).
    case undefined(String, line: Int)
    /// An operation the immutable sandbox forbids (mutating an input list or dict).
    case security(String, line: Int)
    /// Any other failure while rendering (wrong types, unknown filter, bad arguments).
    case runtime(String, line: Int)

    public var line: Int {
        switch self {
        case .syntax(_, let line), .raised(_, let line), .undefined(_, let line), .security(_, let line),
            .runtime(_, let line):
            line
        }
    }

    public var message: String {
        switch self {
        case .syntax(let message, _), .raised(let message, _), .undefined(let message, _),
            .security(let message, _), .runtime(let message, _):
            message
        }
    }

    public var description: String {
        switch self {
        case .syntax(let message, let line): "template syntax error at line \(line): \(message)"
        case .raised(let message, let line): "template raised an exception at line \(line): \(message)"
        case .undefined(let message, let line): "undefined value at template line \(line): \(message)"
        case .security(let message, let line): "sandbox violation at template line \(line): \(message)"
        case .runtime(let message, let line): "template error at line \(line): \(message)"
        }
    }
}

/// A literal written in the template.
enum Constant: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
}

struct Argument: Sendable {
    let name: String?
    let value: Expression
}

enum BinaryOperator: String, Sendable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", floorDivide = "//", modulo = "%", power = "**"
}

enum ComparisonOperator: String, Sendable {
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    case contains = "in", notContains = "not in"
}

indirect enum Expression: Sendable {
    case constant(Constant)
    case name(String)
    case list([Expression])
    case tuple([Expression])
    case dict([(key: Expression, value: Expression)])
    case attribute(Expression, String)
    case item(Expression, Expression)
    case slice(Expression, start: Expression?, stop: Expression?, step: Expression?)
    case call(Expression, [Argument])
    case filter(Expression, name: String, [Argument])
    case test(Expression, name: String, [Argument], negated: Bool)
    case negate(Expression)
    case plus(Expression)
    case not(Expression)
    case and(Expression, Expression)
    case or(Expression, Expression)
    case binary(BinaryOperator, Expression, Expression)
    case compare(Expression, [(ComparisonOperator, Expression)])
    case concat([Expression])
    case conditional(condition: Expression, then: Expression, otherwise: Expression?)
}

/// Where `set` and `for` put values.
indirect enum AssignTarget: Sendable {
    case name(String)
    case attribute(String, String)  // `ns.attr`
    case tuple([AssignTarget])
}

struct Parameter: Sendable {
    let name: String
    let defaultValue: Expression?
}

struct MacroDefinition: Sendable {
    let name: String
    let parameters: [Parameter]
    let body: [Node]
}

struct FilterCall: Sendable {
    let name: String
    let arguments: [Argument]
}

struct ForLoop: Sendable {
    let target: AssignTarget
    let iterable: Expression
    let condition: Expression?
    let body: [Node]
    let otherwise: [Node]
    let recursive: Bool
}

indirect enum Node: Sendable {
    case text(String)
    case output(Expression, line: Int)
    case conditional(branches: [(condition: Expression, body: [Node], line: Int)], otherwise: [Node])
    case loop(ForLoop, line: Int)
    case assign(AssignTarget, Expression, line: Int)
    case assignBlock(AssignTarget, filters: [FilterCall], body: [Node], line: Int)
    case macro(MacroDefinition, line: Int)
    case callBlock(callerParameters: [Parameter], call: Expression, body: [Node], line: Int)
    case filterBlock([FilterCall], body: [Node], line: Int)
    case scope(assignments: [(String, Expression)], body: [Node], line: Int)
    case breakLoop(line: Int)
    case continueLoop(line: Int)
}
