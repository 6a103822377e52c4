import Foundation

/// A Python dict as the template sees it: insertion-ordered, keys compared with Python equality.
/// String keys (nearly all of them) are found through a hash index.
struct PythonDict {
    private(set) var keys: [Value] = []
    private(set) var values: [Value] = []
    private var stringIndex: [String: Int] = [:]

    var count: Int { keys.count }

    func index(of key: Value) -> Int? {
        if case .string(let name) = key { return stringIndex[name] }
        return keys.firstIndex { $0.pythonEquals(key) }
    }

    subscript(key: Value) -> Value? {
        index(of: key).map { values[$0] }
    }

    subscript(name: String) -> Value? {
        stringIndex[name].map { values[$0] }
    }

    mutating func set(_ key: Value, _ value: Value) {
        if let existing = index(of: key) {
            values[existing] = value
            return
        }
        if case .string(let name) = key { stringIndex[name] = keys.count }
        keys.append(key)
        values.append(value)
    }
}

/// Attributes of a `namespace()` object; shared by reference so `set ns.x` inside loops is seen outside.
final class NamespaceStorage {
    var attributes = PythonDict()
}

/// The `loop` variable of a `for` block.
final class LoopState {
    let items: [Value]
    var index0 = 0
    let depth0: Int
    var lastChangedValue: [Value]?
    /// Renders the loop body over nested items, for `loop(children)` in a `recursive` loop.
    var recurse: ((Value) throws -> Value)?

    init(items: [Value], depth0: Int) {
        self.items = items
        self.depth0 = depth0
    }
}

/// A macro (or a call block's `caller`) together with the scope it was defined in.
final class MacroValue {
    let definition: MacroDefinition
    let closure: Scope
    let caller: Value?

    init(definition: MacroDefinition, closure: Scope, caller: Value?) {
        self.definition = definition
        self.closure = closure
        self.caller = caller
    }
}

/// A global function such as `range` or `raise_exception`.
struct BuiltinFunction {
    let name: String
    let body: (_ interpreter: Interpreter, _ arguments: CallArguments) throws -> Value
}

struct CallArguments {
    var positional: [Value] = []
    var keyword: [(String, Value)] = []

    func value(_ position: Int, _ name: String) -> Value? {
        if position < positional.count { return positional[position] }
        return keyword.first { $0.0 == name }?.1
    }
}

/// The runtime value: Python's types as far as chat templates can reach them.
enum Value {
    /// A missing variable, attribute or item; carries Jinja's message for when it is misused.
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([Value])
    case tuple([Value])
    case dict(PythonDict)
    case namespace(NamespaceStorage)
    case loop(LoopState)
    case macro(MacroValue)
    case function(BuiltinFunction)
    /// `obj.method` on a str, list, dict or loop, called later.
    indirect case boundMethod(Value, String)

    init(_ value: JinjaValue) {
        switch value {
        case .none: self = .none
        case .bool(let flag): self = .bool(flag)
        case .int(let number): self = .int(number)
        case .double(let number): self = .double(number)
        case .string(let text): self = .string(text)
        case .array(let items): self = .list(items.map(Value.init))
        case .object(let object):
            var dict = PythonDict()
            for (key, item) in object { dict.set(.string(key), Value(item)) }
            self = .dict(dict)
        }
    }

    init(_ constant: Constant) {
        switch constant {
        case .none: self = .none
        case .bool(let flag): self = .bool(flag)
        case .int(let number): self = .int(number)
        case .double(let number): self = .double(number)
        case .string(let text): self = .string(text)
        }
    }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// Python's type name, for error messages that match Python's wording.
    var typeName: String {
        switch self {
        case .undefined: "Undefined"
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .list: "list"
        case .tuple: "tuple"
        case .dict: "dict"
        case .namespace: "Namespace"
        case .loop: "LoopContext"
        case .macro: "Macro"
        case .function: "function"
        case .boundMethod: "builtin_function_or_method"
        }
    }

    var isTruthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let flag): flag
        case .int(let number): number != 0
        case .double(let number): number != 0
        case .string(let text): !text.isEmpty
        case .list(let items), .tuple(let items): !items.isEmpty
        case .dict(let dict): dict.count > 0
        default: true
        }
    }

    /// A number as Double, with bools counting as 0/1 (Python's bool is an int).
    var numericValue: Double? {
        switch self {
        case .bool(let flag): flag ? 1 : 0
        case .int(let number): Double(number)
        case .double(let number): number
        default: nil
        }
    }

    /// An integer value, bools included; nil for anything else.
    var integerValue: Int? {
        switch self {
        case .bool(let flag): flag ? 1 : 0
        case .int(let number): number
        default: nil
        }
    }

    func pythonEquals(_ other: Value) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let a), .string(let b)): return a.unicodeScalars.elementsEqual(b.unicodeScalars)
        case (.list(let a), .list(let b)), (.tuple(let a), .tuple(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.pythonEquals($1) }
        case (.dict(let a), .dict(let b)):
            guard a.count == b.count else { return false }
            for (key, value) in zip(a.keys, a.values) {
                guard let otherValue = b[key], value.pythonEquals(otherValue) else { return false }
            }
            return true
        case (.namespace(let a), .namespace(let b)): return a === b
        case (.loop(let a), .loop(let b)): return a === b
        default:
            if let a = integerValue, let b = other.integerValue { return a == b }
            if let a = numericValue, let b = other.numericValue { return a == b }
            return false
        }
    }

    /// Python's `<`, `>` ordering: nil when the two types cannot be ordered.
    func pythonCompare(_ other: Value) -> ComparisonResult? {
        switch (self, other) {
        case (.string(let a), .string(let b)):
            for (x, y) in zip(a.unicodeScalars, b.unicodeScalars) where x != y {
                return x.value < y.value ? .orderedAscending : .orderedDescending
            }
            let (countA, countB) = (a.unicodeScalars.count, b.unicodeScalars.count)
            return countA == countB ? .orderedSame : (countA < countB ? .orderedAscending : .orderedDescending)
        case (.list(let a), .list(let b)), (.tuple(let a), .tuple(let b)):
            for (x, y) in zip(a, b) where !x.pythonEquals(y) {
                return x.pythonCompare(y)
            }
            return a.count == b.count ? .orderedSame : (a.count < b.count ? .orderedAscending : .orderedDescending)
        default:
            if let a = integerValue, let b = other.integerValue {
                return a == b ? .orderedSame : (a < b ? .orderedAscending : .orderedDescending)
            }
            if let a = numericValue, let b = other.numericValue {
                if a.isNaN || b.isNaN { return nil }
                return a == b ? .orderedSame : (a < b ? .orderedAscending : .orderedDescending)
            }
            return nil
        }
    }

    /// Python's `str(value)`; undefined prints as nothing.
    var pythonString: String {
        switch self {
        case .undefined: ""
        case .string(let text): text
        default: pythonRepr
        }
    }

    /// Python's `repr(value)`, used when a template prints a list or dict.
    var pythonRepr: String {
        var printing: Set<ObjectIdentifier> = []
        return repr(printing: &printing)
    }

    /// A namespace that (through its attributes) holds itself prints its attributes as `{...}`
    /// inside itself, as Python's dict repr does, instead of recursing forever.
    private func repr(printing: inout Set<ObjectIdentifier>) -> String {
        switch self {
        case .list(let items):
            return "[" + items.map { $0.repr(printing: &printing) }.joined(separator: ", ") + "]"
        case .tuple(let items):
            let inner = items.map { $0.repr(printing: &printing) }
            return inner.count == 1 ? "(" + inner[0] + ",)" : "(" + inner.joined(separator: ", ") + ")"
        case .dict(let dict):
            return "{" + zip(dict.keys, dict.values).map { $0.repr(printing: &printing) + ": " + $1.repr(printing: &printing) }
                .joined(separator: ", ") + "}"
        case .namespace(let storage):
            let identity = ObjectIdentifier(storage)
            guard printing.insert(identity).inserted else { return "<Namespace {...}>" }
            defer { printing.remove(identity) }
            return "<Namespace " + Value.dict(storage.attributes).repr(printing: &printing) + ">"
        case .undefined: return "Undefined"
        case .none: return "None"
        case .bool(let flag): return flag ? "True" : "False"
        case .int(let number): return String(number)
        case .double(let number): return PythonFloat.repr(number)
        case .string(let text): return PythonStringRepr.repr(text)
        case .loop: return "<LoopContext>"
        case .macro(let macro): return "<Macro '\(macro.definition.name)'>"
        case .function(let function): return "<built-in function \(function.name)>"
        case .boundMethod(let owner, let name): return "<built-in method \(name) of \(owner.typeName) object>"
        }
    }
}

enum PythonStringRepr {
    /// Python quotes with `'` unless the text has `'` and no `"`; it escapes control characters.
    static func repr(_ text: String) -> String {
        let useDouble = text.contains("'") && !text.contains("\"")
        let quote: Character = useDouble ? "\"" : "'"
        var result = String(quote)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "'" where !useDouble: result += "\\'"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    result += "\\x" + hex(scalar.value, width: 2)
                } else if scalar.value >= 0x80 && !isPrintable(scalar) {
                    if scalar.value <= 0xFF {
                        result += "\\x" + hex(scalar.value, width: 2)
                    } else if scalar.value <= 0xFFFF {
                        result += "\\u" + hex(scalar.value, width: 4)
                    } else {
                        result += "\\U" + hex(scalar.value, width: 8)
                    }
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        result.append(quote)
        return result
    }

    private static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// Python's `str.isprintable` for one character: not a control, format, separator
    /// (other than the ASCII space), surrogate, private-use or unassigned code point.
    private static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator,
            .spaceSeparator:
            return false
        default:
            return true
        }
    }
}

enum PythonFloat {
    /// Python's `repr(float)`: shortest round-trip digits, positional for exponents in [-4, 16).
    static func repr(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value < 0 ? "-inf" : "inf" }
        if value == 0 { return value.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description gives the shortest round-trip digits; re-lay them out as Python does.
        var text = "\(value.magnitude)"
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        var integerPart = text
        var fractionPart = ""
        if let dot = text.firstIndex(of: ".") {
            integerPart = String(text[..<dot])
            fractionPart = String(text[text.index(after: dot)...])
        }
        var digits = integerPart + fractionPart
        var pointPosition = integerPart.count + exponent  // digits before the decimal point
        while digits.hasPrefix("0") && digits.count > 1 {
            digits.removeFirst()
            pointPosition -= 1
        }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let decimalExponent = pointPosition - 1
        let sign = value < 0 ? "-" : ""
        if decimalExponent < -4 || decimalExponent >= 16 {
            var mantissa = String(digits.first!)
            if digits.count > 1 { mantissa += "." + digits.dropFirst() }
            let exponentDigits = String(abs(decimalExponent))
            return sign + mantissa + "e" + (decimalExponent < 0 ? "-" : "+")
                + (exponentDigits.count < 2 ? "0" + exponentDigits : exponentDigits)
        }
        if pointPosition <= 0 {
            return sign + "0." + String(repeating: "0", count: -pointPosition) + digits
        }
        if pointPosition >= digits.count {
            return sign + digits + String(repeating: "0", count: pointPosition - digits.count) + ".0"
        }
        let split = digits.index(digits.startIndex, offsetBy: pointPosition)
        return sign + digits[..<split] + "." + digits[split...]
    }
}
