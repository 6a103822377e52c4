import Foundation

/// Python's `json.dumps` as transformers' `tojson` filter calls it (`ensure_ascii=False` by default).
struct JSONWriter {
    var output = ""
    let ensureASCII: Bool
    let sortKeys: Bool
    unowned let interpreter: Interpreter
    private var indent: String?
    private var itemSeparator = ", "
    private var keySeparator = ": "

    init(ensureASCII: Bool, sortKeys: Bool, interpreter: Interpreter) {
        self.ensureASCII = ensureASCII
        self.sortKeys = sortKeys
        self.interpreter = interpreter
    }

    /// With an indent Python's default item separator loses its trailing space.
    mutating func configure(indent: Value?, separators: (item: String, key: String)?) throws {
        switch indent {
        case nil, .none?: self.indent = nil
        case .string(let text)?: self.indent = text
        case let value?:
            guard let width = value.integerValue else {
                throw interpreter.runtimeError("tojson indent must be an integer or string, not \(value.typeName)")
            }
            try interpreter.checkStringSize(width, "tojson indent")
            self.indent = String(repeating: " ", count: max(0, width))
        }
        if self.indent != nil { itemSeparator = "," }
        if let separators {
            itemSeparator = separators.item
            keySeparator = separators.key
        }
    }

    mutating func write(_ value: Value, level: Int) throws {
        switch value {
        case .none: output += "null"
        case .bool(let flag): output += flag ? "true" : "false"
        case .int(let number): output += String(number)
        case .double(let number): output += JSONWriter.number(number)
        case .string(let text): writeString(text)
        case .list(let items), .tuple(let items):
            guard !items.isEmpty else { output += "[]"; return }
            output += "["
            for (position, item) in items.enumerated() {
                if position > 0 { output += itemSeparator }
                newline(level + 1)
                try write(item, level: level + 1)
            }
            newline(level)
            output += "]"
        case .dict(let dict):
            guard dict.count > 0 else { output += "{}"; return }
            var pairs = try zip(dict.keys, dict.values).map { (key: try keyString($0), value: $1) }
            if sortKeys {
                pairs = pairs.enumerated().sorted { a, b in
                    let order = Value.string(a.element.key).pythonCompare(.string(b.element.key))
                    return order == .orderedSame ? a.offset < b.offset : order == .orderedAscending
                }.map(\.element)
            }
            output += "{"
            for (position, pair) in pairs.enumerated() {
                if position > 0 { output += itemSeparator }
                newline(level + 1)
                writeString(pair.key)
                output += keySeparator
                try write(pair.value, level: level + 1)
            }
            newline(level)
            output += "}"
        default:
            throw interpreter.runtimeError("Object of type \(value.typeName) is not JSON serializable")
        }
    }

    private mutating func newline(_ level: Int) {
        guard let indent else { return }
        output += "\n"
        for _ in 0..<level { output += indent }
    }

    private func keyString(_ key: Value) throws -> String {
        switch key {
        case .string(let text): return text
        case .int(let number): return String(number)
        case .bool(let flag): return flag ? "true" : "false"
        case .none: return "null"
        case .double(let number): return JSONWriter.number(number)
        default: throw interpreter.runtimeError("keys must be str, int, float, bool or None, not \(key.typeName)")
        }
    }

    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
        return PythonFloat.repr(value)
    }

    private mutating func writeString(_ text: String) {
        JSONStringLiteral.append(text, ensureASCII: ensureASCII, to: &output)
    }
}

/// A JSON string literal written as Python's `json.dumps` writes it (short escapes for the usual
/// controls, lowercase `\u00XX` for the rest). The router's JSON responses use it too.
public enum JSONStringLiteral {
    /// Appends `text` quoted; with `ensureASCII` every scalar outside printable ASCII becomes
    /// `\uXXXX` (a surrogate pair above U+FFFF), as `ensure_ascii=True` does.
    public static func append(_ text: String, ensureASCII: Bool = false, to output: inout String) {
        output += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case "\u{08}": output += "\\b"
            case "\u{0C}": output += "\\f"
            default:
                if scalar.value < 0x20 || (ensureASCII && scalar.value > 0x7E) {
                    if scalar.value > 0xFFFF {
                        let offset = scalar.value - 0x10000
                        output += unicodeEscape(0xD800 + (offset >> 10))
                        output += unicodeEscape(0xDC00 + (offset & 0x3FF))
                    } else {
                        output += unicodeEscape(scalar.value)
                    }
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        output += "\""
    }

    private static func unicodeEscape(_ code: UInt32) -> String {
        let digits = String(code, radix: 16)
        return "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
    }
}

/// Python's `%` string formatting (`"%s: %d" % (a, b)` and the `format` filter).
enum PrintfFormatter {
    /// Python prints any precision; here a precision past 1000 digits is refused (C's formatter,
    /// which does the digits, is not made for more).
    static func checkPrecision(_ precision: Int, interpreter: Interpreter) throws {
        guard precision <= 1000 else { throw interpreter.runtimeError("format precision \(precision) is too large (at most 1000)") }
    }

    static func format(_ format: String, _ arguments: [Value], mapping: Value, interpreter: Interpreter) throws -> String {
        var result = ""
        var scalars = Array(format.unicodeScalars)[...]
        var nextArgument = 0
        while let scalar = scalars.popFirst() {
            guard scalar == "%" else {
                result.unicodeScalars.append(scalar)
                continue
            }
            var value: Value?
            if scalars.first == "(" {
                scalars.removeFirst()
                var key = ""
                while let next = scalars.popFirst(), next != ")" { key.unicodeScalars.append(next) }
                guard case .dict(let dict) = mapping, let found = dict[key] else {
                    throw interpreter.runtimeError("format requires a mapping with key '\(key)'")
                }
                value = found
            }
            var flags = ""
            while let next = scalars.first, "-+ 0#".unicodeScalars.contains(next) {
                flags.unicodeScalars.append(next)
                scalars.removeFirst()
            }
            var width = ""
            while let next = scalars.first, next.properties.numericType != nil, next.isASCII {
                width.unicodeScalars.append(next)
                scalars.removeFirst()
            }
            var precision: Int?
            if scalars.first == "." {
                scalars.removeFirst()
                var digits = ""
                while let next = scalars.first, next.isASCII, next.properties.numericType != nil {
                    digits.unicodeScalars.append(next)
                    scalars.removeFirst()
                }
                precision = Int(digits) ?? Int.max
                try PrintfFormatter.checkPrecision(precision!, interpreter: interpreter)
            }
            guard let conversion = scalars.popFirst() else { throw interpreter.runtimeError("incomplete format") }
            if conversion == "%" {
                result += "%"
                continue
            }
            if value == nil {
                guard nextArgument < arguments.count else {
                    throw interpreter.runtimeError("not enough arguments for format string")
                }
                value = arguments[nextArgument]
                nextArgument += 1
            }
            var text: String
            switch conversion {
            case "s": text = value!.pythonString
            case "r", "a": text = value!.pythonRepr
            case "d", "i", "u":
                guard let number = try value!.integerValue ?? value!.numericValue.map({ try interpreter.truncatedInteger($0) }) else {
                    throw interpreter.runtimeError("%\(conversion) format: a real number is required, not \(value!.typeName)")
                }
                text = String(number)
                if flags.contains("+") && number >= 0 { text = "+" + text }
            case "f", "F", "e", "E", "g", "G":
                guard let number = value!.numericValue else {
                    throw interpreter.runtimeError("must be real number, not \(value!.typeName)")
                }
                text = String(format: "%\(flags.contains("+") ? "+" : "").\(precision ?? 6)\(conversion)", number)
            case "x", "X", "o":
                guard let number = value!.integerValue else { throw interpreter.runtimeError("%\(conversion) format requires an integer") }
                text = String(number, radix: conversion == "o" ? 8 : 16, uppercase: conversion == "X")
            case "c":
                if case .string(let character) = value! { text = character } else {
                    guard let code = value!.integerValue, let scalar = UInt32(exactly: code).flatMap(Unicode.Scalar.init) else {
                        throw interpreter.runtimeError("%c arg not in range(0x110000)")
                    }
                    text = String(scalar)
                }
            default:
                throw interpreter.runtimeError("unsupported format character '\(conversion)'")
            }
            if conversion == "s" || conversion == "r", let precision {
                text = String(String.UnicodeScalarView(text.unicodeScalars.prefix(precision)))
            }
            if !width.isEmpty { try interpreter.checkStringSize(Int(width) ?? Int.max, "format width") }
            if let minimum = Int(width), text.unicodeScalars.count < minimum {
                let padding = minimum - text.unicodeScalars.count
                if flags.contains("-") {
                    text += String(repeating: " ", count: padding)
                } else if flags.contains("0") && conversion != "s" && conversion != "r" {
                    let signed = text.hasPrefix("-") || text.hasPrefix("+")
                    let sign = signed ? String(text.removeFirst()) : ""
                    text = sign + String(repeating: "0", count: padding) + text
                } else {
                    text = String(repeating: " ", count: padding) + text
                }
            }
            result += text
        }
        if nextArgument < arguments.count, case .none = mapping {
            throw interpreter.runtimeError("not all arguments converted during string formatting")
        }
        return result
    }
}

/// Python's `str.format` for the common forms: `{}`, `{0}`, `{name}`, `{x.attr}`, `!r`, and
/// simple specs (fill/align, width, precision, `d`/`f`/`s`).
enum BraceFormatter {
    static func format(_ format: String, _ arguments: CallArguments, interpreter: Interpreter) throws -> String {
        var result = ""
        var scalars = Array(format.unicodeScalars)[...]
        var automaticIndex = 0
        while let scalar = scalars.popFirst() {
            if scalar == "}" {
                guard scalars.first == "}" else { throw interpreter.runtimeError("Single '}' encountered in format string") }
                scalars.removeFirst()
                result += "}"
                continue
            }
            guard scalar == "{" else {
                result.unicodeScalars.append(scalar)
                continue
            }
            if scalars.first == "{" {
                scalars.removeFirst()
                result += "{"
                continue
            }
            var field = ""
            while let next = scalars.popFirst(), next != "}" { field.unicodeScalars.append(next) }
            var spec = ""
            if let colon = field.firstIndex(of: ":") {
                spec = String(field[field.index(after: colon)...])
                field = String(field[..<colon])
            }
            var conversion: Character?
            if let bang = field.firstIndex(of: "!") {
                conversion = field[field.index(after: bang)...].first
                field = String(field[..<bang])
            }
            let parts = field.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            var value: Value
            let head = parts.first ?? ""
            if head.isEmpty {
                guard automaticIndex < arguments.positional.count else {
                    throw interpreter.runtimeError("Replacement index \(automaticIndex) out of range for positional args tuple")
                }
                value = arguments.positional[automaticIndex]
                automaticIndex += 1
            } else if head.unicodeScalars.allSatisfy({ ("0"..."9").contains($0) }) {
                // Only digits make an index (`{-1}` names a keyword argument, as in Python).
                guard let index = Int(head), index < arguments.positional.count else {
                    throw interpreter.runtimeError("Replacement index \(head) out of range for positional args tuple")
                }
                value = arguments.positional[index]
            } else {
                guard let found = arguments.keyword.first(where: { $0.0 == head })?.1 else {
                    throw interpreter.runtimeError("KeyError: '\(head)'")
                }
                value = found
            }
            for attribute in parts.dropFirst() { value = try interpreter.attribute(attribute, of: value) }
            var text = conversion == "r" ? value.pythonRepr : value.pythonString
            text = try applySpec(spec, value: value, text: text, interpreter: interpreter)
            result += text
        }
        return result
    }

    private static func applySpec(_ spec: String, value: Value, text: String, interpreter: Interpreter) throws -> String {
        guard !spec.isEmpty else { return text }
        var characters = Array(spec)[...]
        var fill: Character = " "
        var align: Character?
        if characters.count >= 2, "<>^=".contains(characters[characters.startIndex + 1]) {
            fill = characters.removeFirst()
            align = characters.removeFirst()
        } else if let first = characters.first, "<>^=".contains(first) {
            align = characters.removeFirst()
        }
        var sign: Character?
        if let first = characters.first, "+- ".contains(first) { sign = characters.removeFirst() }
        if characters.first == "0", align == nil {
            // A leading zero means zero-padding after the sign.
            fill = "0"
            align = "="
        }
        var width = ""
        while let next = characters.first, next.isNumber { width.append(characters.removeFirst()) }
        var precision: Int?
        if characters.first == "." {
            characters.removeFirst()
            var digits = ""
            while let next = characters.first, next.isNumber { digits.append(characters.removeFirst()) }
            precision = Int(digits) ?? (digits.isEmpty ? nil : Int.max)
            if let precision { try PrintfFormatter.checkPrecision(precision, interpreter: interpreter) }
        }
        let type = characters.first
        var body = text
        switch type {
        case "f"?, "F"?, "e"?, "g"?, "%"?:
            guard let number = value.numericValue else { throw interpreter.runtimeError("Unknown format code for \(value.typeName)") }
            body = type == "%" ? String(format: "%.\(precision ?? 6)f%%", number * 100)
                : String(format: "%.\(precision ?? 6)\(type!)", number)
        case "d"?:
            guard let number = value.integerValue else { throw interpreter.runtimeError("Unknown format code 'd' for \(value.typeName)") }
            body = String(number)
        default:
            if let precision, case .string = value { body = String(String.UnicodeScalarView(text.unicodeScalars.prefix(precision))) }
            if let precision, case .double(let number) = value { body = String(format: "%.\(precision)g", number) }
        }
        if let sign, sign != "-", let number = value.numericValue, number >= 0, !body.hasPrefix("+") {
            body = String(sign) + body
        }
        if !width.isEmpty { try interpreter.checkStringSize(Int(width) ?? Int.max, "format width") }
        guard let minimum = Int(width), body.unicodeScalars.count < minimum else { return body }
        let padding = minimum - body.unicodeScalars.count
        let isNumber = value.numericValue != nil && type != "s"
        switch align ?? (isNumber ? ">" : "<") {
        case "<": return body + String(repeating: fill, count: padding)
        case "^": return String(repeating: fill, count: padding / 2) + body + String(repeating: fill, count: padding - padding / 2)
        case "=" where body.hasPrefix("-") || body.hasPrefix("+"):
            return String(body.first!) + String(repeating: fill, count: padding) + body.dropFirst()
        default: return String(repeating: fill, count: padding) + body
        }
    }
}

/// C `strftime` directives as Python's `datetime.strftime` prints them in the C locale.
enum Strftime {
    private static let weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    private static let months = ["January", "February", "March", "April", "May", "June", "July", "August",
                                 "September", "October", "November", "December"]

    static func format(_ format: String, date: Date, timeZone: TimeZone) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday, .nanosecond], from: date)
        let year = parts.year!, month = parts.month!, day = parts.day!
        let hour = parts.hour!, minute = parts.minute!, second = parts.second!
        let weekdayIndex = (parts.weekday! + 5) % 7  // Monday = 0
        let dayOfYear = calendar.ordinality(of: .day, in: .year, for: date) ?? 1
        var result = ""
        var characters = Array(format)[...]
        while let character = characters.popFirst() {
            guard character == "%", var directive = characters.popFirst() else {
                result.append(character)
                continue
            }
            // glibc's `%-d` style flag drops the padding of numeric fields.
            var unpadded = false
            if directive == "-", let next = characters.popFirst() {
                unpadded = true
                directive = next
            }
            func pad(_ value: Int, _ width: Int, _ fill: Character = "0") -> String {
                let digits = String(value)
                if unpadded { return digits }
                return String(repeating: fill, count: max(0, width - digits.count)) + digits
            }
            switch directive {
            case "a": result += String(weekdays[weekdayIndex].prefix(3))
            case "A": result += weekdays[weekdayIndex]
            case "w": result += String((weekdayIndex + 1) % 7)
            case "u": result += String(weekdayIndex + 1)
            case "d": result += pad(day, 2)
            case "e": result += pad(day, 2, " ")
            case "b", "h": result += String(months[month - 1].prefix(3))
            case "B": result += months[month - 1]
            case "m": result += pad(month, 2)
            case "y": result += pad(year % 100, 2)
            case "Y": result += String(year)
            case "C": result += pad(year / 100, 2)
            case "H": result += pad(hour, 2)
            case "I": result += pad(hour % 12 == 0 ? 12 : hour % 12, 2)
            case "p": result += hour < 12 ? "AM" : "PM"
            case "M": result += pad(minute, 2)
            case "S": result += pad(second, 2)
            case "f": result += pad((parts.nanosecond ?? 0) / 1000, 6)
            case "j": result += pad(dayOfYear, 3)
            case "D": result += pad(month, 2) + "/" + pad(day, 2) + "/" + pad(year % 100, 2)
            case "F": result += String(year) + "-" + pad(month, 2) + "-" + pad(day, 2)
            case "T": result += pad(hour, 2) + ":" + pad(minute, 2) + ":" + pad(second, 2)
            case "R": result += pad(hour, 2) + ":" + pad(minute, 2)
            case "n": result += "\n"
            case "t": result += "\t"
            case "%": result += "%"
            case "z", "Z": break  // naive datetimes (datetime.now()) print these as empty
            default: result += "%" + String(directive)
            }
        }
        return result
    }
}
