import Foundation

/// Python `str` methods as templates call them, working on Unicode scalars like Python does.
enum StringMethods {
    static let names: Set<String> = [
        "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "upper", "lower",
        "title", "capitalize", "replace", "format", "find", "rfind", "index", "rindex", "count", "join", "isdigit",
        "isalpha", "isalnum", "isspace", "isupper", "islower", "isnumeric", "isdecimal", "zfill", "center", "ljust",
        "rjust", "swapcase", "casefold", "removeprefix", "removesuffix", "partition", "rpartition",
    ]

    /// Python's `str.isspace` for one character.
    static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0: return true
        default: return scalar.value > 0x7F && scalar.properties.isWhitespace
        }
    }

    static func strip(_ text: String, characters: String?, leading: Bool, trailing: Bool) -> String {
        let scalars = Array(text.unicodeScalars)
        let set = characters.map { Set($0.unicodeScalars) }
        func strippable(_ scalar: Unicode.Scalar) -> Bool { set?.contains(scalar) ?? isSpace(scalar) }
        var start = 0
        var end = scalars.count
        if leading { while start < end, strippable(scalars[start]) { start += 1 } }
        if trailing { while end > start, strippable(scalars[end - 1]) { end -= 1 } }
        if start == 0 && end == scalars.count { return text }
        return String(String.UnicodeScalarView(scalars[start..<end]))
    }

    static func split(_ text: String, separator: String?, maxSplit: Int) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var parts: [String] = []
        guard let separator else {
            // Whitespace runs separate; leading and trailing whitespace produce no empty parts.
            var index = 0
            while index < scalars.count {
                while index < scalars.count, isSpace(scalars[index]) { index += 1 }
                guard index < scalars.count else { break }
                if maxSplit >= 0 && parts.count == maxSplit {
                    var end = scalars.count
                    while end > index, isSpace(scalars[end - 1]) { end -= 1 }
                    parts.append(String(String.UnicodeScalarView(scalars[index..<end])))
                    return parts
                }
                let start = index
                while index < scalars.count, !isSpace(scalars[index]) { index += 1 }
                parts.append(String(String.UnicodeScalarView(scalars[start..<index])))
            }
            return parts
        }
        let needle = Array(separator.unicodeScalars)
        var start = 0
        var index = 0
        while index + needle.count <= scalars.count {
            if maxSplit >= 0 && parts.count == maxSplit { break }
            if scalars[index..<index + needle.count].elementsEqual(needle) {
                parts.append(String(String.UnicodeScalarView(scalars[start..<index])))
                index += needle.count
                start = index
            } else {
                index += 1
            }
        }
        parts.append(String(String.UnicodeScalarView(scalars[start...])))
        return parts
    }

    static func splitLines(_ text: String, keepEnds: Bool = false) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var lines: [String] = []
        var start = 0
        var index = 0
        while index < scalars.count {
            let value = scalars[index].value
            let isBreak = [0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029].contains(value)
            if isBreak {
                var next = index + 1
                if value == 0x0D, next < scalars.count, scalars[next] == "\n" { next += 1 }
                let end = keepEnds ? next : index
                lines.append(String(String.UnicodeScalarView(scalars[start..<end])))
                start = next
                index = next
            } else {
                index += 1
            }
        }
        if start < scalars.count { lines.append(String(String.UnicodeScalarView(scalars[start...]))) }
        return lines
    }

    static func replace(_ text: String, _ old: String, _ new: String, count: Int) -> String {
        if count < 0 && !old.isEmpty {
            return split(text, separator: old, maxSplit: -1).joined(separator: new)
        }
        if old.isEmpty {
            // Python inserts `new` before every character and at the end, up to `count` times.
            var result = ""
            var inserted = 0
            for piece in [""] + text.unicodeScalars.map({ String($0) }) {
                result += piece
                if count < 0 || inserted < count {
                    result += new
                    inserted += 1
                }
            }
            return result
        }
        return split(text, separator: old, maxSplit: count).joined(separator: new)
    }

    static func capitalize(_ text: String) -> String {
        guard let first = text.unicodeScalars.first else { return text }
        return String(first).uppercased() + String(String.UnicodeScalarView(text.unicodeScalars.dropFirst())).lowercased()
    }

    private static func isCased(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isCased
    }

    /// Python's `str.title`: a cased character after a cased one is lowered, otherwise raised.
    static func pythonTitle(_ text: String) -> String {
        var result = ""
        var previousCased = false
        for scalar in text.unicodeScalars {
            if isCased(scalar) {
                result += previousCased ? String(scalar).lowercased() : String(scalar).uppercased()
                previousCased = true
            } else {
                result.unicodeScalars.append(scalar)
                previousCased = false
            }
        }
        return result
    }

    /// Jinja's `title` filter: words start after whitespace, `-`, `(`, `{`, `[` or `<`.
    static func jinjaTitle(_ text: String) -> String {
        var result = ""
        var atWordStart = true
        for scalar in text.unicodeScalars {
            let isBoundary = isSpace(scalar) || "-({[<".unicodeScalars.contains(scalar)
            if isBoundary {
                result.unicodeScalars.append(scalar)
                atWordStart = true
            } else if atWordStart {
                result += String(scalar).uppercased()
                atWordStart = false
            } else {
                result += String(scalar).lowercased()
            }
        }
        return result
    }

    static func htmlEscape(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&#34;"
            case "'": result += "&#39;"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    static func wordCount(_ text: String) -> Int {
        var count = 0
        var inWord = false
        for scalar in text.unicodeScalars {
            let isWordCharacter = scalar.properties.isAlphabetic || scalar.properties.numericType != nil || scalar == "_"
            if isWordCharacter && !inWord { count += 1 }
            inWord = isWordCharacter
        }
        return count
    }

    static func center(_ text: String, width: Int, fill: String) -> String {
        let length = text.unicodeScalars.count
        guard width > length else { return text }
        let margin = width - length
        // CPython puts the extra space on the left when both margin and width are odd.
        let left = margin / 2 + (margin & width & 1)
        return String(repeating: fill, count: left) + text + String(repeating: fill, count: margin - left)
    }

    static func find(_ text: String, _ needle: String, reverse: Bool) -> Int {
        let scalars = Array(text.unicodeScalars)
        let target = Array(needle.unicodeScalars)
        guard target.count <= scalars.count else { return -1 }
        let positions = Array(0...(scalars.count - target.count))
        for index in reverse ? positions.reversed() : positions
        where scalars[index..<index + target.count].elementsEqual(target) {
            return index
        }
        return -1
    }

    static func count(_ text: String, _ needle: String) -> Int {
        if needle.isEmpty { return text.unicodeScalars.count + 1 }
        return split(text, separator: needle, maxSplit: -1).count - 1
    }
}

extension Interpreter {
    private func stringArgument(_ value: Value?, method: String) throws -> String? {
        guard let value else { return nil }
        switch value {
        case .string(let text): return text
        case .none: return nil
        default: throw runtimeError("\(method)() argument must be str or None, not \(value.typeName)")
        }
    }

    func callMethod(_ name: String, on owner: Value, _ arguments: CallArguments) throws -> Value {
        let argument = arguments.value
        switch owner {
        case .string(let text):
            return try callStringMethod(name, text, arguments)
        case .dict(let dict):
            switch name {
            case "get":
                guard let key = argument(0, "key") else { throw runtimeError("get expected at least 1 argument, got 0") }
                return dict[key] ?? argument(1, "default") ?? .none
            case "keys": return .list(dict.keys)
            case "values": return .list(dict.values)
            case "items": return .list(zip(dict.keys, dict.values).map { .tuple([$0, $1]) })
            case "copy": return owner
            default: break
            }
        case .list(let items), .tuple(let items):
            switch name {
            case "index":
                guard let target = argument(0, "value"), let index = items.firstIndex(where: { $0.pythonEquals(target) }) else {
                    throw runtimeError("value is not in list")
                }
                return .int(index)
            case "count":
                guard let target = argument(0, "value") else { throw runtimeError("count() takes exactly one argument") }
                return .int(items.filter { $0.pythonEquals(target) }.count)
            case "copy": return owner
            default: break
            }
        case .loop(let state):
            switch name {
            case "cycle":
                guard !arguments.positional.isEmpty else { throw runtimeError("no items for cycling given") }
                return arguments.positional[state.index0 % arguments.positional.count]
            case "changed":
                defer { state.lastChangedValue = arguments.positional }
                guard let last = state.lastChangedValue else { return .bool(true) }
                return .bool(!Value.list(last).pythonEquals(.list(arguments.positional)))
            default: break
            }
        default:
            break
        }
        throw runtimeError("'\(owner.typeName)' object has no method '\(name)'")
    }

    private func callStringMethod(_ name: String, _ text: String, _ arguments: CallArguments) throws -> Value {
        let argument = arguments.value
        switch name {
        case "startswith", "endswith":
            guard let given = argument(0, "prefix") else { throw runtimeError("\(name)() takes at least 1 argument (0 given)") }
            var candidates: [String] = []
            switch given {
            case .string(let single): candidates = [single]
            case .tuple(let items), .list(let items):
                candidates = try items.map {
                    guard case .string(let item) = $0 else { throw runtimeError("tuple for \(name) must only contain str") }
                    return item
                }
            default: throw runtimeError("\(name) first arg must be str or a tuple of str, not \(given.typeName)")
            }
            let scalars = Array(text.unicodeScalars)
            return .bool(candidates.contains { candidate in
                let target = Array(candidate.unicodeScalars)
                guard target.count <= scalars.count else { return false }
                return name == "startswith"
                    ? scalars.prefix(target.count).elementsEqual(target)
                    : scalars.suffix(target.count).elementsEqual(target)
            })
        case "strip", "lstrip", "rstrip":
            let characters = try stringArgument(argument(0, "chars"), method: name)
            return .string(StringMethods.strip(text, characters: characters, leading: name != "rstrip", trailing: name != "lstrip"))
        case "split", "rsplit":
            let separator = try stringArgument(argument(0, "sep"), method: name)
            if separator == "" { throw runtimeError("empty separator") }
            let maxSplit = argument(1, "maxsplit")?.integerValue ?? -1
            if name == "rsplit" && maxSplit >= 0 {
                let reversedText = String(String.UnicodeScalarView(text.unicodeScalars.reversed()))
                let reversedSeparator = separator.map { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) }
                let parts = StringMethods.split(reversedText, separator: reversedSeparator, maxSplit: maxSplit)
                return .list(parts.reversed().map { .string(String(String.UnicodeScalarView($0.unicodeScalars.reversed()))) })
            }
            return .list(StringMethods.split(text, separator: separator, maxSplit: maxSplit).map(Value.string))
        case "splitlines":
            return .list(StringMethods.splitLines(text, keepEnds: argument(0, "keepends")?.isTruthy ?? false).map(Value.string))
        case "upper": return .string(text.uppercased())
        case "lower", "casefold": return .string(text.lowercased())
        case "title": return .string(StringMethods.pythonTitle(text))
        case "capitalize": return .string(StringMethods.capitalize(text))
        case "swapcase":
            return .string(text.unicodeScalars.map { scalar in
                let single = String(scalar)
                return scalar.properties.isUppercase ? single.lowercased() : (scalar.properties.isLowercase ? single.uppercased() : single)
            }.joined())
        case "replace":
            guard case .string(let old)? = argument(0, "old"), case .string(let new)? = argument(1, "new") else {
                throw runtimeError("replace() arguments must be str")
            }
            return .string(StringMethods.replace(text, old, new, count: argument(2, "count")?.integerValue ?? -1))
        case "format":
            return .string(try BraceFormatter.format(text, arguments, interpreter: self))
        case "find", "rfind", "index", "rindex":
            guard case .string(let needle)? = argument(0, "sub") else { throw runtimeError("\(name)() argument must be str") }
            let position = StringMethods.find(text, needle, reverse: name.hasPrefix("r"))
            if position < 0 && name.hasSuffix("index") { throw runtimeError("substring not found") }
            return .int(position)
        case "count":
            guard case .string(let needle)? = argument(0, "sub") else { throw runtimeError("count() argument must be str") }
            return .int(StringMethods.count(text, needle))
        case "join":
            guard let items = argument(0, "iterable") else { throw runtimeError("join() takes exactly one argument") }
            return .string(try iterate(items).map { item in
                guard case .string(let part) = item else {
                    throw runtimeError("sequence item: expected str instance, \(item.typeName) found")
                }
                return part
            }.joined(separator: text))
        case "isdigit", "isnumeric", "isdecimal":
            return .bool(!text.isEmpty && text.unicodeScalars.allSatisfy { $0.properties.numericType != nil })
        case "isalpha":
            return .bool(!text.isEmpty && text.unicodeScalars.allSatisfy { $0.properties.isAlphabetic })
        case "isalnum":
            return .bool(!text.isEmpty && text.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
        case "isspace":
            return .bool(!text.isEmpty && text.unicodeScalars.allSatisfy(StringMethods.isSpace))
        case "isupper":
            return .bool(text.uppercased() == text && text.lowercased() != text)
        case "islower":
            return .bool(text.lowercased() == text && text.uppercased() != text)
        case "zfill":
            let width = argument(0, "width")?.integerValue ?? 0
            try checkStringSize(width, name)
            let length = text.unicodeScalars.count
            guard width > length else { return .string(text) }
            var body = text
            var sign = ""
            if let first = text.first, first == "-" || first == "+" {
                sign = String(first)
                body.removeFirst()
            }
            return .string(sign + String(repeating: "0", count: width - length) + body)
        case "center", "ljust", "rjust":
            let width = argument(0, "width")?.integerValue ?? 0
            try checkStringSize(width, name)
            let fill = try stringArgument(argument(1, "fillchar"), method: name) ?? " "
            let length = text.unicodeScalars.count
            guard width > length else { return .string(text) }
            switch name {
            case "center": return .string(StringMethods.center(text, width: width, fill: fill))
            case "ljust": return .string(text + String(repeating: fill, count: width - length))
            default: return .string(String(repeating: fill, count: width - length) + text)
            }
        case "removeprefix", "removesuffix":
            guard case .string(let affix)? = argument(0, "prefix") else { throw runtimeError("\(name)() argument must be str") }
            if name == "removeprefix", text.unicodeScalars.starts(with: affix.unicodeScalars) {
                return .string(String(String.UnicodeScalarView(text.unicodeScalars.dropFirst(affix.unicodeScalars.count))))
            }
            if name == "removesuffix", !affix.isEmpty, Array(text.unicodeScalars).suffix(affix.unicodeScalars.count).elementsEqual(affix.unicodeScalars) {
                return .string(String(String.UnicodeScalarView(text.unicodeScalars.dropLast(affix.unicodeScalars.count))))
            }
            return .string(text)
        case "partition", "rpartition":
            guard case .string(let separator)? = argument(0, "sep"), !separator.isEmpty else { throw runtimeError("empty separator") }
            let position = StringMethods.find(text, separator, reverse: name == "rpartition")
            let scalars = Array(text.unicodeScalars)
            if position < 0 {
                return name == "partition" ? .tuple([.string(text), .string(""), .string("")]) : .tuple([.string(""), .string(""), .string(text)])
            }
            let after = position + separator.unicodeScalars.count
            return .tuple([.string(String(String.UnicodeScalarView(scalars[..<position]))), .string(separator),
                           .string(String(String.UnicodeScalarView(scalars[after...])))])
        default:
            throw runtimeError("'str' object has no method '\(name)'")
        }
    }
}
