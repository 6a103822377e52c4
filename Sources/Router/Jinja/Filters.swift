import Foundation

/// Jinja's built-in filters and tests (jinja2 3.1 semantics), plus transformers' `tojson`.
extension Interpreter {
    private func string(_ value: Value?, _ what: String) throws -> String? {
        guard let value else { return nil }
        switch value {
        case .string(let text): return text
        case .none: return nil
        default: throw runtimeError("\(what) must be a string, not \(value.typeName)")
        }
    }

    /// `Int(number)` toward zero, refused (not a crash) past 64 bits, which Python's integers
    /// would hold.
    func truncatedInteger(_ number: Double) throws -> Int {
        let truncated = number.rounded(.towardZero)
        guard truncated >= -9.223372036854775808e18, truncated < 9.223372036854775808e18 else {
            throw runtimeError("int(\(number)) does not fit in 64 bits")
        }
        return Int(truncated)
    }

    private func integer(_ value: Value?, _ what: String) throws -> Int? {
        guard let value else { return nil }
        guard let number = value.integerValue else {
            throw runtimeError("\(what) must be an integer, not \(value.typeName)")
        }
        return number
    }

    /// Follows a dotted attribute path (`"function.name"`) the way `attribute=` arguments do;
    /// integer segments index into lists.
    func attributePath(_ path: Value, of value: Value) throws -> Value {
        if let index = path.integerValue { return try item(.int(index), of: value) }
        guard case .string(let dotted) = path else { return try item(path, of: value) }
        var current = value
        for part in dotted.split(separator: ".", omittingEmptySubsequences: false) {
            if let index = Int(part) {
                current = try item(.int(index), of: current)
            } else {
                current = try item(.string(String(part)), of: current)
            }
        }
        return current
    }

    /// Python's `len()`.
    func length(of value: Value) throws -> Int {
        switch value {
        case .string(let text): return text.unicodeScalars.count
        case .list(let items), .tuple(let items): return items.count
        case .dict(let dict): return dict.count
        case .namespace(let storage): return storage.attributes.count
        case .undefined: return 0
        default: throw runtimeError("object of type '\(value.typeName)' has no len()")
        }
    }

    /// Sort key used by `sort`, `unique`, `min`, `max`: folds case unless asked not to.
    private func sortKey(_ value: Value, caseSensitive: Bool, attribute: Value?) throws -> Value {
        var key = value
        if let attribute, !(attribute.isUndefined), !(attribute.pythonEquals(.none)) {
            key = try attributePath(attribute, of: value)
        }
        if !caseSensitive, case .string(let text) = key { return .string(text.lowercased()) }
        return key
    }

    private func sorted(_ items: [Value], reverse: Bool, caseSensitive: Bool, attribute: Value?) throws -> [Value] {
        let keyed = try items.map { (key: try sortKey($0, caseSensitive: caseSensitive, attribute: attribute), value: $0) }
        var failure: JinjaError?
        // Swift's sort is not guaranteed stable; sort indices with a tie-break to keep Python's stability.
        let order = keyed.indices.sorted { a, b in
            guard let result = keyed[a].key.pythonCompare(keyed[b].key) else {
                failure = runtimeError("'<' not supported between instances of '\(keyed[a].key.typeName)' and '\(keyed[b].key.typeName)'")
                return a < b
            }
            if result == .orderedSame { return a < b }
            return reverse ? result == .orderedDescending : result == .orderedAscending
        }
        if let failure { throw failure }
        return order.map { keyed[$0].value }
    }

    func applyFilter(_ name: String, to value: Value, _ arguments: CallArguments, in scope: Scope) throws -> Value {
        let argument = arguments.value
        switch name {
        case "tojson":
            if case .undefined = value { throw runtimeError("Object of type Undefined is not JSON serializable") }
            let indent = argument(0, "indent")
            var separators: (item: String, key: String)?
            if let given = argument(2, "separators"), case .list(let parts) = given, parts.count == 2 {
                separators = (parts[0].pythonString, parts[1].pythonString)
            } else if let given = argument(2, "separators"), case .tuple(let parts) = given, parts.count == 2 {
                separators = (parts[0].pythonString, parts[1].pythonString)
            }
            var writer = JSONWriter(
                ensureASCII: argument(1, "ensure_ascii")?.isTruthy ?? false,
                sortKeys: argument(3, "sort_keys")?.isTruthy ?? false,
                interpreter: self)
            try writer.configure(indent: indent, separators: separators)
            try writer.write(value, level: 0)
            return .string(writer.output)
        case "trim":
            return .string(StringMethods.strip(value.pythonString, characters: try string(argument(0, "chars"), "trim characters"), leading: true, trailing: true))
        case "length", "count":
            return .int(try length(of: value))
        case "join":
            let separator = try string(argument(0, "d"), "join separator") ?? ""
            var items = try iterate(value)
            if let attribute = argument(1, "attribute"), !attribute.pythonEquals(.none) {
                items = try items.map { try attributePath(attribute, of: $0) }
            }
            let pieces = items.map(\.pythonString)
            try checkStringSize(pieces.reduce(0) { $0 + $1.utf8.count } + separator.utf8.count * max(0, pieces.count - 1), "join")
            return .string(pieces.joined(separator: separator))
        case "map":
            // jinja2 maps and selects over nothing when given none.
            let items = value.pythonEquals(.none) ? [] : try iterate(value)
            if let attribute = arguments.keyword.first(where: { $0.0 == "attribute" })?.1 {
                let fallback = arguments.keyword.first { $0.0 == "default" }?.1
                return .list(try items.map { item in
                    let found = try attributePath(attribute, of: item)
                    if found.isUndefined, let fallback { return fallback }
                    return found
                })
            }
            guard case .string(let filterName)? = arguments.positional.first else {
                throw runtimeError("map requires a filter name or attribute=")
            }
            let rest = CallArguments(positional: Array(arguments.positional.dropFirst()), keyword: arguments.keyword)
            return .list(try items.map { try applyFilter(filterName, to: $0, rest, in: scope) })
        case "select", "reject", "selectattr", "rejectattr":
            let items = value.pythonEquals(.none) ? [] : try iterate(value)
            let byAttribute = name.hasSuffix("attr")
            var positional = arguments.positional
            var attribute: Value?
            if byAttribute {
                guard !positional.isEmpty else { throw runtimeError("\(name) requires an attribute name") }
                attribute = positional.removeFirst()
            }
            let keep = name.hasPrefix("select")
            var testName: String?
            if !positional.isEmpty {
                guard case .string(let given) = positional.removeFirst() else { throw runtimeError("\(name) test name must be a string") }
                testName = given
            }
            let testArguments = CallArguments(positional: positional, keyword: arguments.keyword)
            return .list(try items.filter { item in
                let subject = try attribute.map { try attributePath($0, of: item) } ?? item
                let passed = try testName.map { try applyTest($0, to: subject, testArguments, in: scope) } ?? subject.isTruthy
                return passed == keep
            })
        case "first":
            return try iterate(value).first ?? .undefined("No first item, sequence was empty.")
        case "last":
            return try iterate(value).last ?? .undefined("No last item, sequence was empty.")
        case "default", "d":
            let fallback = argument(0, "default_value") ?? .string("")
            let boolean = argument(1, "boolean")?.isTruthy ?? false
            if value.isUndefined || (boolean && !value.isTruthy) { return fallback }
            return value
        case "items":
            switch value {
            case .undefined: return .list([])
            case .dict(let dict): return .list(zip(dict.keys, dict.values).map { .tuple([$0, $1]) })
            default: throw runtimeError("Can only get item pairs from a mapping.")
            }
        case "dictsort":
            guard case .dict(let dict) = value else { throw runtimeError("dictsort requires a mapping") }
            let caseSensitive = argument(0, "case_sensitive")?.isTruthy ?? false
            let byValue = (try string(argument(1, "by"), "dictsort by") ?? "key") == "value"
            let reverse = argument(2, "reverse")?.isTruthy ?? false
            let pairs = zip(dict.keys, dict.values).map { Value.tuple([$0, $1]) }
            let keyIndex = Value.int(byValue ? 1 : 0)
            return .list(try sorted(pairs, reverse: reverse, caseSensitive: caseSensitive, attribute: keyIndex))
        case "list":
            return .list(try iterate(value))
        case "string":
            return .string(value.pythonString)
        case "int":
            let fallback = argument(0, "default") ?? .int(0)
            switch value {
            case .int: return value
            case .bool(let flag): return .int(flag ? 1 : 0)
            case .double(let number):
                return number.isFinite ? .int(try truncatedInteger(number)) : fallback
            case .string(let text):
                var base = try integer(argument(1, "base"), "int base") ?? 10
                var trimmed = StringMethods.strip(text, characters: nil, leading: true, trailing: true).replacingOccurrences(of: "_", with: "")
                if base == 0 || base == 16 || base == 8 || base == 2 {
                    // Python's prefixes: base 0 takes its base from them, the others allow their own.
                    let sign = trimmed.hasPrefix("-") ? "-" : ""
                    let digits = trimmed.hasPrefix("-") || trimmed.hasPrefix("+") ? String(trimmed.dropFirst()) : trimmed
                    for (prefix, prefixBase) in [("0x", 16), ("0o", 8), ("0b", 2)]
                    where digits.lowercased().hasPrefix(prefix) && (base == 0 || base == prefixBase) {
                        base = prefixBase
                        trimmed = sign + digits.dropFirst(2)
                    }
                    if base == 0 { base = 10 }
                }
                // jinja2: int(value, base), and where that fails (a bad base too) int(float(value)).
                if (2...36).contains(base), let number = Int(trimmed, radix: base) { return .int(number) }
                if let number = Double(trimmed), number.isFinite { return .int(try truncatedInteger(number)) }
                return fallback
            default: return fallback
            }
        case "float":
            let fallback = argument(0, "default") ?? .double(0)
            switch value {
            case .double: return value
            case .int, .bool: return .double(value.numericValue!)
            case .string(let text):
                let trimmed = StringMethods.strip(text, characters: nil, leading: true, trailing: true)
                if let number = Double(trimmed) { return .double(number) }
                switch trimmed.lowercased() {
                case "inf", "+inf", "infinity": return .double(.infinity)
                case "-inf", "-infinity": return .double(-.infinity)
                case "nan": return .double(.nan)
                default: return fallback
                }
            default: return fallback
            }
        case "upper":
            return .string(value.pythonString.uppercased())
        case "lower":
            return .string(value.pythonString.lowercased())
        case "capitalize":
            return .string(StringMethods.capitalize(value.pythonString))
        case "title":
            return .string(StringMethods.jinjaTitle(value.pythonString))
        case "replace":
            guard let old = try string(argument(0, "old"), "replace old"), let new = try string(argument(1, "new"), "replace new") else {
                throw runtimeError("replace requires old and new strings")
            }
            let count = try integer(argument(2, "count"), "replace count") ?? -1
            let text = value.pythonString
            if new.utf8.count > old.utf8.count {
                // Worst case: every position matches (an empty `old` inserts between all characters).
                let matches = old.isEmpty ? text.unicodeScalars.count + 1 : text.utf8.count / old.utf8.count
                let growth = (new.utf8.count - old.utf8.count).multipliedReportingOverflow(by: count < 0 ? matches : min(count, matches))
                try checkStringSize(growth.overflow ? Int.max : text.utf8.count + growth.partialValue, "replace")
            }
            return .string(StringMethods.replace(text, old, new, count: count))
        case "indent":
            let widthValue = argument(0, "width") ?? .int(4)
            let indentation: String
            if case .string(let text) = widthValue { indentation = text } else {
                let width = try integer(widthValue, "indent width") ?? 4
                try checkStringSize(width, "indent")
                indentation = String(repeating: " ", count: max(0, width))
            }
            let first = argument(1, "first")?.isTruthy ?? false
            let blank = argument(2, "blank")?.isTruthy ?? false
            let lines = StringMethods.splitLines(value.pythonString + "\n")
            var result: String
            if blank {
                result = lines.joined(separator: "\n" + indentation)
            } else {
                result = lines.first ?? ""
                if lines.count > 1 {
                    result += "\n" + lines.dropFirst().map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n")
                }
            }
            if first { result = indentation + result }
            return .string(result)
        case "safe":
            return value
        case "e", "escape", "forceescape":
            return .string(StringMethods.htmlEscape(value.pythonString))
        case "abs":
            switch value {
            // |Int.min| does not fit; Python's integer would grow, the nearest here is a float.
            case .int(let number): return number == .min ? .double(-Double(number)) : .int(abs(number))
            case .bool(let flag): return .int(flag ? 1 : 0)
            case .double(let number): return .double(abs(number))
            default: throw runtimeError("bad operand type for abs(): '\(value.typeName)'")
            }
        case "round":
            let precision = try integer(argument(0, "precision"), "round precision") ?? 0
            let method = try string(argument(1, "method"), "round method") ?? "common"
            guard let number = value.numericValue else { throw runtimeError("round needs a number, not \(value.typeName)") }
            let scale = pow(10.0, Double(precision))
            let rule: FloatingPointRoundingRule
            switch method {
            case "common": rule = .toNearestOrEven
            case "ceil": rule = .up
            case "floor": rule = .down
            default: throw runtimeError("method must be 'common', 'ceil' or 'floor'")
            }
            if method == "common", value.integerValue != nil { return .int(value.integerValue!) }
            // Past 340 digits no double changes (the smallest is about 5e-324).
            if precision > 340 { return value.integerValue.map(Value.int) ?? .double(number) }
            if method == "common", precision >= 0, number.isFinite {
                // Python rounds the exact binary value correctly (2.675 -> 2.67); so does C's printf.
                return .double(Double(String(format: "%.\(precision)f", number)) ?? number)
            }
            return .double((number * scale).rounded(rule) / scale)
        case "sort":
            let items = try iterate(value)
            return .list(try sorted(items, reverse: argument(0, "reverse")?.isTruthy ?? false,
                                    caseSensitive: argument(1, "case_sensitive")?.isTruthy ?? false,
                                    attribute: argument(2, "attribute")))
        case "unique":
            let caseSensitive = argument(0, "case_sensitive")?.isTruthy ?? false
            let attribute = argument(1, "attribute")
            var seen: [Value] = []
            var result: [Value] = []
            for item in try iterate(value) {
                let key = try sortKey(item, caseSensitive: caseSensitive, attribute: attribute)
                if !seen.contains(where: { $0.pythonEquals(key) }) {
                    seen.append(key)
                    result.append(item)
                }
            }
            return .list(result)
        case "reverse":
            if case .string(let text) = value { return .string(String(String.UnicodeScalarView(text.unicodeScalars.reversed()))) }
            return .list(try iterate(value).reversed())
        case "sum":
            var total = argument(1, "start") ?? .int(0)
            for item in try iterate(value) {
                var element = item
                if let attribute = argument(0, "attribute"), !attribute.pythonEquals(.none) {
                    element = try attributePath(attribute, of: item)
                }
                if let a = total.integerValue, let b = element.integerValue,
                   case (let sum, false) = a.addingReportingOverflow(b) {
                    total = .int(sum)
                } else if let a = total.numericValue, let b = element.numericValue {
                    total = .double(a + b)
                } else {
                    throw runtimeError("unsupported operand type(s) for +: '\(total.typeName)' and '\(element.typeName)'")
                }
            }
            return total
        case "min", "max":
            let items = try sorted(try iterate(value), reverse: name == "max",
                                   caseSensitive: argument(0, "case_sensitive")?.isTruthy ?? false,
                                   attribute: argument(1, "attribute"))
            return items.first ?? .undefined("No aggregated item, sequence was empty.")
        case "batch":
            guard let size = try integer(argument(0, "linecount"), "batch size"), size > 0 else {
                throw runtimeError("batch needs a positive size")
            }
            let fill = argument(1, "fill_with")
            var batches: [Value] = []
            var current: [Value] = []
            for item in try iterate(value) {
                current.append(item)
                if current.count == size {
                    batches.append(.list(current))
                    current = []
                }
            }
            if !current.isEmpty {
                if let fill, !fill.pythonEquals(.none) {
                    try checkListSize(size, "batch")
                    current += Array(repeating: fill, count: size - current.count)
                }
                batches.append(.list(current))
            }
            return .list(batches)
        case "wordcount":
            return .int(StringMethods.wordCount(value.pythonString))
        case "center":
            let width = try integer(argument(0, "width"), "center width") ?? 80
            try checkStringSize(width, "center")
            return .string(StringMethods.center(value.pythonString, width: width, fill: " "))
        case "format":
            guard case .string(let format) = value else { throw runtimeError("format filter needs a string") }
            if !arguments.keyword.isEmpty {
                var mapping = PythonDict()
                for (key, item) in arguments.keyword { mapping.set(.string(key), item) }
                return .string(try PrintfFormatter.format(format, [], mapping: .dict(mapping), interpreter: self))
            }
            return .string(try PrintfFormatter.format(format, arguments.positional, mapping: .none, interpreter: self))
        case "attr":
            guard case .string(let attributeName)? = argument(0, "name") else { throw runtimeError("attr needs a name") }
            return try attribute(attributeName, of: value)
        case "truncate":
            let text = value.pythonString
            let limit = try integer(argument(0, "length"), "truncate length") ?? 255
            let killWords = argument(1, "killwords")?.isTruthy ?? false
            let end = try string(argument(2, "end"), "truncate end") ?? "..."
            let leeway = try integer(argument(3, "leeway"), "truncate leeway") ?? 5
            let scalars = Array(text.unicodeScalars)
            if scalars.count <= limit + leeway { return value.isUndefined ? .string("") : .string(text) }
            let cut = max(0, limit - end.unicodeScalars.count)
            var kept = String(String.UnicodeScalarView(scalars[..<cut]))
            if !killWords, let space = kept.lastIndex(of: " ") { kept = String(kept[..<space]) }
            return .string(kept + end)
        case "pprint":
            return .string(value.pythonRepr)
        case "striptags":
            let stripped = value.pythonString.replacingOccurrences(of: "<[^>]*>", with: "", options: .regularExpression)
            return .string(StringMethods.split(stripped, separator: nil, maxSplit: -1).joined(separator: " "))
        case "groupby":
            guard let attribute = argument(0, "attribute") else { throw runtimeError("groupby needs an attribute") }
            let fallback = argument(1, "default")
            let caseSensitive = argument(2, "case_sensitive")?.isTruthy ?? false
            // Sort stably on the (case-folded) key and group runs of equal keys; the grouper shown is
            // the first item's own key, as jinja2 does.
            let triples = try iterate(value).map { item -> Value in
                var key = try attributePath(attribute, of: item)
                if key.isUndefined, let fallback { key = fallback }
                var sortKey = key
                if !caseSensitive, case .string(let text) = key { sortKey = .string(text.lowercased()) }
                return .tuple([sortKey, key, item])
            }
            var groups: [(sortKey: Value, key: Value, items: [Value])] = []
            for case .tuple(let triple) in try sorted(triples, reverse: false, caseSensitive: true, attribute: .int(0)) {
                if let last = groups.last, last.sortKey.pythonEquals(triple[0]) {
                    groups[groups.count - 1].items.append(triple[2])
                } else {
                    groups.append((triple[0], triple[1], [triple[2]]))
                }
            }
            return .list(groups.map { .tuple([$0.key, .list($0.items)]) })
        default:
            if Interpreter.filterNames.contains(name) {
                throw runtimeError("the '\(name)' filter is not supported by this template engine")
            }
            throw runtimeError("No filter named '\(name)'.")
        }
    }

    func applyTest(_ name: String, to value: Value, _ arguments: CallArguments, in scope: Scope) throws -> Bool {
        let other = arguments.value(0, "other") ?? arguments.value(0, "value") ?? arguments.value(0, "num")
        /// Python's `value % divisor` (the sign of the divisor), for integers and floats alike.
        func remainder(_ divisor: Int) throws -> Double {
            if let number = value.integerValue {
                var result = number.remainderReportingOverflow(dividingBy: divisor).partialValue
                if result != 0, (result < 0) != (divisor < 0) { result += divisor }
                return Double(result)
            }
            guard let number = value.numericValue else {
                throw runtimeError("test '\(name)' needs a number, not \(value.typeName)")
            }
            var result = fmod(number, Double(divisor))
            if result != 0, (result < 0) != (divisor < 0) { result += Double(divisor) }
            return result
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": if case .none = value { return true } else { return false }
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "number":
            switch value {
            case .int, .double, .bool: return true
            default: return false
            }
        case "string": if case .string = value { return true } else { return false }
        case "mapping": if case .dict = value { return true } else { return false }
        case "iterable", "sequence":
            switch value {
            case .string, .list, .tuple, .dict, .undefined: return true
            case .namespace: return name == "iterable"
            default: return false
            }
        case "callable":
            switch value {
            case .macro, .function, .boundMethod: return true
            case .loop(let state): return state.recurse != nil
            default: return false
            }
        case "escaped": return false
        case "lower":
            let text = value.pythonString
            return text.lowercased() == text && text.uppercased() != text
        case "upper":
            let text = value.pythonString
            return text.uppercased() == text && text.lowercased() != text
        case "even": return try remainder(2) == 0
        case "odd": return try remainder(2) == 1
        case "divisibleby":
            guard let divisor = other?.integerValue, divisor != 0 else { throw runtimeError("divisibleby needs a non-zero integer") }
            return try remainder(divisor) == 0
        case "eq", "equalto", "==": return value.pythonEquals(other ?? .undefined(""))
        case "ne", "!=": return !value.pythonEquals(other ?? .undefined(""))
        case "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=":
            guard let other, let order = value.pythonCompare(other) else {
                throw runtimeError("'\(name)' not supported between instances of '\(value.typeName)' and '\((other ?? .none).typeName)'")
            }
            switch name {
            case "lt", "lessthan", "<": return order == .orderedAscending
            case "le", "<=": return order != .orderedDescending
            case "gt", "greaterthan", ">": return order == .orderedDescending
            default: return order != .orderedAscending
            }
        case "in":
            guard let container = arguments.value(0, "seq") else { throw runtimeError("test 'in' needs a container") }
            return try contains(container, value)
        case "sameas":
            guard let other else { return false }
            switch (value, other) {
            case (.none, .none): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.undefined, .undefined): return false
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case "filter":
            guard case .string(let filterName) = value else { return false }
            return Interpreter.filterNames.contains(filterName)
        case "test":
            guard case .string(let testName) = value else { return false }
            return Interpreter.testNames.contains(testName)
        default:
            throw runtimeError("No test named '\(name)'.")
        }
    }

    /// Every filter jinja2 (with transformers' additions) knows; a template naming another one
    /// fails to compile, as in jinja2. A few rarely used ones are known but not implemented here.
    static let filterNames: Set<String> = [
        "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
        "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "items", "join", "last",
        "length", "list", "lower", "map", "max", "min", "pprint", "random", "reject", "rejectattr", "replace", "reverse",
        "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
        "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
    ]

    static let testNames: Set<String> = [
        "defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string", "mapping",
        "iterable", "sequence", "callable", "escaped", "lower", "upper", "even", "odd", "divisibleby", "eq", "equalto",
        "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas",
        "filter", "test",
    ]
}
