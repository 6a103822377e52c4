import JSON

/// Compiles a structured-output request (a JSON Schema, JSON mode, a regex or a choice) into
/// grammar rules over bytes. Rule 0 is the whole output; `$ref` targets, the any-JSON-value
/// grammar and object-property chains are further rules, so recursion stays finite.
///
/// What the output looks like, where the schema leaves room:
/// - Whitespace between JSON tokens is at most `maximumWhitespace` of space, tab or newline, so
///   compact and pretty-printed JSON both fit but a model cannot loop on blanks forever.
/// - Objects hold their declared `properties` in the schema's order, every required one and any
///   optional ones; no other keys, whatever `additionalProperties` says (the output stays valid
///   under the schema: extra keys are only ever allowed, never required). An object schema
///   without `properties` is a map: any keys, values under `additionalProperties` (any value
///   when it is absent or true, none when false).
/// - `oneOf` is compiled as `anyOf`: exclusivity is not enforced.
/// - Numbers and integers have at most 15 digits before the point (and 15 after); bounds
///   (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) must be integers, and a
///   bounded number is written without an exponent.
struct SchemaCompiler {
    static let maximumWhitespace = 12
    static let maximumDigits = 15

    /// Keywords that describe without constraining.
    static let annotations: Set<String> = [
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
        "readOnly", "writeOnly", "$defs", "definitions", "contentMediaType", "contentEncoding",
    ]

    private(set) var rules: [GrammarNode] = [.empty]
    private let root: JSONValue
    /// Rule index of each `$ref` target compiled so far (by its reference text).
    private var referenceRules: [String: Int] = [:]
    private var anyValueRule: Int?
    private var anyStringRule: Int?

    private init(root: JSONValue) {
        self.root = root
    }

    /// The automaton for a request.
    static func automaton(for request: StructuredOutputRequest) throws(GrammarError) -> GrammarAutomaton {
        var compiler = SchemaCompiler(root: .null)
        let body: GrammarNode
        switch request {
        case .jsonObject:
            body = .sequence([compiler.whitespace, try compiler.anyObject(), compiler.whitespace])
        case .jsonSchema(_, let schema):
            compiler = SchemaCompiler(root: schema)
            body = .sequence([compiler.whitespace, try compiler.compile(schema, path: "$"), compiler.whitespace])
        case .regex(let pattern):
            body = try RegexCompiler.compile(pattern, jsonString: false)
        case .choice(let choices):
            guard !choices.isEmpty else { throw .unsatisfiable("a choice needs at least one string", path: "$") }
            body = .choice(choices.map { GrammarNode.text($0) })
        }
        compiler.rules[0] = body
        return try GrammarAutomaton(rules: compiler.rules, root: 0,
                                    sharedRules: compiler.anyStringRule.map { [$0: "json-string"] } ?? [:])
    }

    private mutating func addRule(_ node: GrammarNode = .empty) -> Int {
        rules.append(node)
        return rules.count - 1
    }

    // MARK: JSON pieces

    var whitespace: GrammarNode {
        .repeating(.byteSet([0x20...0x20, 0x09...0x0A]), min: 0, max: Self.maximumWhitespace)
    }

    /// One character of a JSON string's content: any scalar but `"`, `\` and controls, or an escape.
    static let stringCharacter: GrammarNode = .choice([
        UTF8Ranges.node(for: [0x20...0x21, 0x23...0x5B, 0x5D...0x10FFFF]),
        .sequence([.byte(0x5C), .choice([.byteSet([0x22...0x22, 0x5C...0x5C, 0x2F...0x2F]), .byteSet([0x62...0x62, 0x66...0x66, 0x6E...0x6E, 0x72...0x72, 0x74...0x74])])]),
        .sequence([.text("\\u"), .repeating(hexDigit, min: 4, max: 4)]),
    ])
    static let hexDigit: GrammarNode = .byteSet([0x30...0x39, 0x41...0x46, 0x61...0x66])
    static let digit: GrammarNode = .byteSet([0x30...0x39])
    static let nonZeroDigit: GrammarNode = .byteSet([0x31...0x39])

    static func quoted(_ content: GrammarNode) -> GrammarNode { .sequence([.byte(0x22), content, .byte(0x22)]) }

    /// Any JSON value, as one recursive rule.
    mutating func anyValue() throws(GrammarError) -> GrammarNode {
        if let rule = anyValueRule { return .rule(rule) }
        let rule = addRule()
        anyValueRule = rule
        rules[rule] = .choice([
            try anyObject(), anyArray(), anyString(),
            try Self.number(integer: false, bounds: NumberBounds(), path: "$"), .text("true"), .text("false"), .text("null"),
        ])
        return .rule(rule)
    }

    /// Any JSON string, as one rule every unconstrained string calls: its content state is
    /// then one automaton state, whose mask (nearly the whole vocabulary) is computed once.
    mutating func anyString() -> GrammarNode {
        if let rule = anyStringRule { return .rule(rule) }
        let rule = addRule(Self.quoted(.repeating(Self.stringCharacter, min: 0, max: nil)))
        anyStringRule = rule
        return .rule(rule)
    }

    mutating func anyObject() throws(GrammarError) -> GrammarNode {
        try map(values: try anyValue())
    }

    /// `{` (string `:` value (`,` string `:` value)*)? `}`.
    mutating func map(values: GrammarNode) throws(GrammarError) -> GrammarNode {
        let member = GrammarNode.sequence([anyString(), whitespace,
                                           .byte(0x3A), whitespace, values])
        return .sequence([.byte(0x7B), whitespace,
                          .optional(.sequence([member, .repeating(.sequence([whitespace, .byte(0x2C), whitespace, member]), min: 0, max: nil), whitespace])),
                          .byte(0x7D)])
    }

    mutating func anyArray() -> GrammarNode {
        let value = GrammarNode.rule(anyValueRule!)
        return array(item: value, minimum: 0, maximum: nil)
    }

    func array(item: GrammarNode, minimum: Int, maximum: Int?) -> GrammarNode {
        let separator = GrammarNode.sequence([whitespace, .byte(0x2C), whitespace])
        let more = GrammarNode.repeating(.sequence([separator, item]), min: max(minimum - 1, 0), max: maximum.map { max($0 - 1, 0) })
        let items = GrammarNode.sequence([item, more, whitespace])
        return .sequence([.byte(0x5B), whitespace, minimum == 0 ? .optional(items) : items, .byte(0x5D)])
    }

    /// The JSON text of a value, as an `enum`/`const` must appear.
    static func literal(_ value: JSONValue) -> GrammarNode { .text(value.serialized) }

    // MARK: Schemas

    mutating func compile(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarNode {
        switch schema {
        case .bool(true): return try anyValue()
        case .bool(false): throw .unsatisfiable("the schema false allows no value", path: path)
        case .object(let members):
            return try compileObject(members, schema: schema, path: path)
        default:
            throw .invalidValue(keyword: "schema", path: path, reason: "a schema must be an object or a boolean")
        }
    }

    private mutating func compileObject(_ members: [(String, JSONValue)], schema: JSONValue, path: String) throws(GrammarError) -> GrammarNode {
        let keys = Set(members.map(\.0))
        if let reference = schema["$ref"] {
            guard case .string(let text) = reference else { throw .invalidValue(keyword: "$ref", path: path, reason: "must be a string") }
            let others = keys.subtracting(Self.annotations).subtracting(["$ref"])
            if let other = others.sorted().first { throw .unsupportedKeyword(other, path: path + " (beside $ref)") }
            return try self.reference(text, path: path)
        }
        for combinator in ["anyOf", "oneOf", "allOf"] where schema[combinator] != nil {
            guard case .array(let options)? = schema[combinator], !options.isEmpty else {
                throw .invalidValue(keyword: combinator, path: path, reason: "must be a non-empty list of schemas")
            }
            let others = keys.subtracting(Self.annotations).subtracting([combinator])
            if let other = others.sorted().first { throw .unsupportedKeyword(other, path: path + " (beside \(combinator))") }
            if combinator == "allOf" {
                guard options.count == 1 else { throw .unsupportedKeyword("allOf", path: path + " (with more than one schema)") }
                return try compile(options[0], path: "\(path).allOf[0]")
            }
            var alternatives: [GrammarNode] = []
            for (index, option) in options.enumerated() {
                alternatives.append(try compile(option, path: "\(path).\(combinator)[\(index)]"))
            }
            return .choice(alternatives)
        }
        if let value = schema["const"] {
            try refuseOthers(keys, allowed: ["const", "type"], path: path)
            return Self.literal(value)
        }
        if let value = schema["enum"] {
            try refuseOthers(keys, allowed: ["enum", "type"], path: path)
            guard case .array(let options) = value, !options.isEmpty else {
                throw .invalidValue(keyword: "enum", path: path, reason: "must be a non-empty list")
            }
            return .choice(options.map(Self.literal))
        }
        var types: [String]
        switch schema["type"] {
        case nil:
            // No type: the keywords present say which (properties → object, items → array, …).
            if keys.contains("properties") || keys.contains("required") || keys.contains("additionalProperties") { types = ["object"] }
            else if keys.contains("items") || keys.contains("prefixItems") || keys.contains("minItems") || keys.contains("maxItems") { types = ["array"] }
            else if keys.contains("pattern") || keys.contains("format") || keys.contains("minLength") || keys.contains("maxLength") { types = ["string"] }
            else if keys.contains("minimum") || keys.contains("maximum") || keys.contains("exclusiveMinimum") || keys.contains("exclusiveMaximum") { types = ["number"] }
            else {
                try refuseOthers(keys, allowed: [], path: path)
                return try anyValue()
            }
        case .string(let type)?: types = [type]
        case .array(let list)?:
            types = []
            for item in list {
                guard case .string(let type) = item else { throw .invalidValue(keyword: "type", path: path, reason: "must be a string or a list of strings") }
                types.append(type)
            }
        default: throw .invalidValue(keyword: "type", path: path, reason: "must be a string or a list of strings")
        }
        var allowed: Set<String> = ["type"]
        var alternatives: [GrammarNode] = []
        for type in types {
            switch type {
            case "object":
                allowed.formUnion(["properties", "required", "additionalProperties"])
                alternatives.append(try objectSchema(schema, path: path))
            case "array":
                allowed.formUnion(["items", "prefixItems", "minItems", "maxItems"])
                alternatives.append(try arraySchema(schema, path: path))
            case "string":
                allowed.formUnion(["pattern", "format", "minLength", "maxLength"])
                alternatives.append(try stringSchema(schema, path: path))
            case "number", "integer":
                allowed.formUnion(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"])
                alternatives.append(try Self.number(integer: type == "integer", bounds: try NumberBounds(schema, path: path), path: path))
            case "boolean": alternatives.append(.choice([.text("true"), .text("false")]))
            case "null": alternatives.append(.text("null"))
            default: throw .invalidValue(keyword: "type", path: path, reason: "unknown type '\(type)'")
            }
        }
        try refuseOthers(keys, allowed: allowed, path: path)
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    private func refuseOthers(_ keys: Set<String>, allowed: Set<String>, path: String) throws(GrammarError) {
        if let other = keys.subtracting(Self.annotations).subtracting(allowed).sorted().first {
            throw .unsupportedKeyword(other, path: path)
        }
    }

    private mutating func reference(_ text: String, path: String) throws(GrammarError) -> GrammarNode {
        if let rule = referenceRules[text] { return .rule(rule) }
        var target = root
        var targetPath = "$"
        if text != "#" {
            guard text.hasPrefix("#/") else { throw .unresolvedReference(text, path: path) }
            for part in text.dropFirst(2).split(separator: "/", omittingEmptySubsequences: false) {
                let name = part.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                guard let next = target[name] else { throw .unresolvedReference(text, path: path) }
                target = next
                targetPath += ".\(name)"
            }
        }
        let rule = addRule()
        referenceRules[text] = rule
        rules[rule] = try compile(target, path: targetPath)
        return .rule(rule)
    }

    private static func count(_ schema: JSONValue, _ keyword: String, path: String) throws(GrammarError) -> Int? {
        guard let value = schema[keyword] else { return nil }
        guard case .int(let number) = value, number >= 0 else {
            throw .invalidValue(keyword: keyword, path: path, reason: "must be a non-negative integer")
        }
        return number
    }

    private mutating func objectSchema(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarNode {
        var required = Set<String>()
        if let value = schema["required"] {
            guard case .array(let names) = value else { throw .invalidValue(keyword: "required", path: path, reason: "must be a list of strings") }
            for name in names {
                guard case .string(let text) = name else { throw .invalidValue(keyword: "required", path: path, reason: "must be a list of strings") }
                required.insert(text)
            }
        }
        var properties: [(String, JSONValue)] = []
        if let value = schema["properties"] {
            guard case .object(let members) = value else { throw .invalidValue(keyword: "properties", path: path, reason: "must be an object") }
            properties = members
        }
        guard !properties.isEmpty else {
            if let name = required.sorted().first { throw .unsatisfiable("'\(name)' is required but not among properties", path: path) }
            switch schema["additionalProperties"] {
            case nil, .bool(true)?: return try map(values: try anyValue())
            case .bool(false)?: return .sequence([.byte(0x7B), whitespace, .byte(0x7D)])
            case let values?: return try map(values: try compile(values, path: "\(path).additionalProperties"))
            }
        }
        if let missing = required.subtracting(properties.map(\.0)).sorted().first {
            throw .unsatisfiable("'\(missing)' is required but not among properties", path: path)
        }
        if let values = schema["additionalProperties"], values != .bool(false), values != .bool(true) {
            _ = try compile(values, path: "\(path).additionalProperties")  // checked, though never needed
        }
        var members: [(node: GrammarNode, required: Bool)] = []
        for (name, propertySchema) in properties {
            let value = try compile(propertySchema, path: "\(path).properties.\(name)")
            members.append((.sequence([Self.literal(.string(name)), whitespace, .byte(0x3A), whitespace, value]), required.contains(name)))
        }
        // chain(i, first): members i... given whether one was written; each a rule, so the
        // choices between writing and skipping an optional member stay linear in size.
        let separator = GrammarNode.sequence([whitespace, .byte(0x2C), whitespace])
        var chains = [[Int]](repeating: [0, 0], count: members.count + 1)
        for index in 0...members.count { chains[index] = [addRule(), addRule()] }
        for index in stride(from: members.count, through: 0, by: -1) {
            for first in [0, 1] {
                guard index < members.count else { rules[chains[index][first]] = .empty; continue }
                let member = members[index]
                let written = GrammarNode.sequence([first == 1 ? .empty : separator, member.node, .rule(chains[index + 1][0])])
                rules[chains[index][first]] = member.required ? written : .choice([written, .rule(chains[index + 1][first])])
            }
        }
        return .sequence([.byte(0x7B), whitespace, .rule(chains[0][1]), whitespace, .byte(0x7D)])
    }

    private mutating func arraySchema(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarNode {
        let minimum = try Self.count(schema, "minItems", path: path) ?? 0
        let maximum = try Self.count(schema, "maxItems", path: path)
        if let maximum, maximum < minimum { throw .unsatisfiable("maxItems is below minItems", path: path) }
        if let maximum, maximum > 1000 { throw .tooLarge(path: path) }
        var prefix: [GrammarNode] = []
        if let value = schema["prefixItems"] {
            guard case .array(let schemas) = value else { throw .invalidValue(keyword: "prefixItems", path: path, reason: "must be a list of schemas") }
            for (index, itemSchema) in schemas.enumerated() { prefix.append(try compile(itemSchema, path: "\(path).prefixItems[\(index)]")) }
        }
        let item: GrammarNode
        switch schema["items"] {
        case nil: item = try anyValue()
        case .bool(false)?:
            guard !prefix.isEmpty else {
                guard minimum == 0 else { throw .unsatisfiable("items false with minItems", path: path) }
                return .sequence([.byte(0x5B), whitespace, .byte(0x5D)])
            }
            item = .empty
        case let value?: item = try compile(value, path: "\(path).items")
        }
        guard !prefix.isEmpty else { return array(item: item, minimum: minimum, maximum: maximum) }
        // prefixItems then items: the prefix in full (a shorter array is allowed, as the schema allows).
        let separator = GrammarNode.sequence([whitespace, .byte(0x2C), whitespace])
        guard minimum <= prefix.count, schema["items"] == .bool(false) || maximum == prefix.count else {
            throw .unsupportedKeyword("prefixItems", path: path + " (with items beyond the prefix)")
        }
        var body = GrammarNode.empty
        for (index, node) in prefix.enumerated().reversed() {
            let rest = index + 1 < prefix.count ? GrammarNode.optional(.sequence([separator, body])) : .empty
            body = index + 1 <= minimum ? .sequence([node, index + 1 < minimum ? .sequence([separator, body]) : rest]) : .sequence([node, rest])
        }
        return .sequence([.byte(0x5B), whitespace, minimum == 0 ? .optional(body) : body, whitespace, .byte(0x5D)])
    }

    private mutating func stringSchema(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarNode {
        let minimum = try Self.count(schema, "minLength", path: path)
        let maximum = try Self.count(schema, "maxLength", path: path)
        if let maximum, maximum > 10_000 { throw .tooLarge(path: path) }
        if let minimum, let maximum, maximum < minimum { throw .unsatisfiable("maxLength is below minLength", path: path) }
        var content: GrammarNode?
        if let value = schema["pattern"] {
            guard case .string(let pattern) = value else { throw .invalidValue(keyword: "pattern", path: path, reason: "must be a string") }
            content = try RegexCompiler.compile(Self.anchored(pattern), jsonString: true)
        }
        if let value = schema["format"] {
            guard case .string(let format) = value else { throw .invalidValue(keyword: "format", path: path, reason: "must be a string") }
            guard content == nil else { throw .unsupportedKeyword("format", path: path + " (beside pattern)") }
            guard let pattern = Self.formats[format] else { throw .unsupportedKeyword("format: \(format)", path: path) }
            content = try RegexCompiler.compile(pattern, jsonString: true)
        }
        if let content {
            if minimum != nil || maximum != nil { throw .unsupportedKeyword(minimum != nil ? "minLength" : "maxLength", path: path + " (beside pattern or format)") }
            return Self.quoted(content)
        }
        if minimum == nil, maximum == nil { return anyString() }
        return Self.quoted(.repeating(Self.stringCharacter, min: minimum ?? 0, max: maximum))
    }

    /// A JSON Schema pattern matches anywhere in the string unless anchored: make that explicit.
    static func anchored(_ pattern: String) -> String {
        let start = pattern.hasPrefix("^") ? String(pattern.dropFirst()) : ".*" + pattern
        return start.hasSuffix("$") && !start.hasSuffix("\\$") ? String(start.dropLast()) : start + ".*"
    }

    /// The formats held to, as whole-string patterns (RFC 3339 dates and times, RFC 4122 UUIDs,
    /// a plain address for email).
    static let formats: [String: String] = {
        let date = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
        let time = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
        return [
            "date": date, "time": time, "date-time": "\(date)T\(time)",
            "uuid": "[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            "email": "[A-Za-z0-9._%+-]{1,32}@[A-Za-z0-9-]{1,32}(\\.[A-Za-z0-9-]{1,32}){0,3}\\.[A-Za-z]{2,12}",
        ]
    }()

    // MARK: Numbers

    /// A number or integer: `-?(0|[1-9][0-9]*)`, then for numbers an optional fraction and,
    /// when unbounded, an exponent.
    static func number(integer: Bool, bounds: NumberBounds, path: String) throws(GrammarError) -> GrammarNode {
        let fraction = GrammarNode.sequence([.byte(0x2E), .repeating(digit, min: 1, max: maximumDigits)])
        guard !bounds.isEmpty else {
            let magnitude = GrammarNode.choice([.byte(0x30), .sequence([nonZeroDigit, .repeating(digit, min: 0, max: maximumDigits - 1)])])
            var parts: [GrammarNode] = [.optional(.byte(0x2D)), magnitude]
            if !integer {
                parts.append(.optional(fraction))
                parts.append(.optional(.sequence([.byteSet([0x45...0x45, 0x65...0x65]), .optional(.byteSet([0x2B...0x2B, 0x2D...0x2D])),
                                                  .repeating(digit, min: 1, max: 3)])))
            }
            return .sequence(parts)
        }
        let limit = Int(pow10(maximumDigits)) - 1
        // Inclusive integer bounds on the value; a number's fraction is handled at the edges.
        var low = bounds.minimum ?? -limit, high = bounds.maximum ?? limit
        low = max(low, -limit)
        high = min(high, limit)
        if integer {
            if bounds.exclusiveMinimum { low += 1 }
            if bounds.exclusiveMaximum { high -= 1 }
            guard low <= high else { throw .unsatisfiable("no integer lies within the bounds", path: path) }
            return signedRange(low, high)
        }
        guard low < high || (low == high && !bounds.exclusiveMinimum && !bounds.exclusiveMaximum) else {
            throw .unsatisfiable("no number lies within the bounds", path: path)
        }
        let zeros = GrammarNode.optional(.sequence([.byte(0x2E), .repeating(.byte(0x30), min: 1, max: maximumDigits)]))
        let nonZeroFraction = GrammarNode.sequence([.byte(0x2E), .repeating(digit, min: 0, max: maximumDigits - 1), nonZeroDigit])
        var alternatives: [GrammarNode] = []
        // Whole values low...high (without the excluded ends), written with an optional .000.
        let wholeLow = bounds.exclusiveMinimum ? low + 1 : low, wholeHigh = bounds.exclusiveMaximum ? high - 1 : high
        if wholeLow <= wholeHigh { alternatives.append(.sequence([signedRange(wholeLow, wholeHigh), zeros])) }
        // Values strictly between two integers n and n + 1 inside [low, high]: n + f for n ≥ 0,
        // -(m + f) for negative ones, with a fraction that is not zero.
        if low < high {
            if high - 1 >= max(low, 0) { alternatives.append(.sequence([range(max(low, 0), high - 1), nonZeroFraction])) }
            if low < 0 {
                // -(m + f) lies in (-(m + 1), -m): needs -(m + 1) ≥ low and -m ≤ high.
                let mLow = max(-high, 0), mHigh = -low - 1
                if mLow <= mHigh { alternatives.append(.sequence([.byte(0x2D), range(mLow, mHigh), nonZeroFraction])) }
            }
        }
        return .choice(alternatives)
    }

    static func pow10(_ exponent: Int) -> Double {
        var value = 1.0
        for _ in 0..<exponent { value *= 10 }
        return value
    }

    /// Integers low...high as decimal text (`-` for negatives, no leading zeros, no `-0`).
    static func signedRange(_ low: Int, _ high: Int) -> GrammarNode {
        var alternatives: [GrammarNode] = []
        if low < 0 {
            // Negative values -max(1, -high)... down to low: magnitudes max(1, -high)...-low.
            let magnitudeLow = max(1, -high), magnitudeHigh = -low
            if magnitudeLow <= magnitudeHigh { alternatives.append(.sequence([.byte(0x2D), range(magnitudeLow, magnitudeHigh)])) }
        }
        if high >= 0 { alternatives.append(range(max(low, 0), high)) }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// Non-negative integers low...high as decimal text without leading zeros.
    static func range(_ low: Int, _ high: Int) -> GrammarNode {
        var alternatives: [GrammarNode] = []
        var start = low
        while start <= high {
            let digits = String(start).count
            let top = min(high, Int(pow10(digits)) - 1)
            alternatives.append(sameLength(Array(String(start).utf8), Array(String(top).utf8)))
            start = top + 1
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// Decimal strings of one length from `low` to `high` (as digit bytes, low ≤ high).
    private static func sameLength(_ low: [UInt8], _ high: [UInt8]) -> GrammarNode {
        guard let first = low.first, let last = high.first else { return .empty }
        if low.count == 1 { return .byteSet([first...last]) }
        let restLow = Array(low.dropFirst()), restHigh = Array(high.dropFirst())
        if first == last { return .sequence([.byte(first), sameLength(restLow, restHigh)]) }
        let zeros = [UInt8](repeating: 0x30, count: restLow.count), nines = [UInt8](repeating: 0x39, count: restLow.count)
        // Split off the partial first and last leading digits; the middle takes any digits, so
        // the size stays linear in the length.
        var alternatives: [GrammarNode] = []
        var low = first, high = last
        if restLow != zeros {
            alternatives.append(.sequence([.byte(first), sameLength(restLow, nines)]))
            low += 1
        }
        var tail: [GrammarNode] = []
        if restHigh != nines {
            tail.append(.sequence([.byte(last), sameLength(zeros, restHigh)]))
            high -= 1
        }
        if low <= high {
            alternatives.append(.sequence([.byteSet([low...high]), .repeating(digit, min: restLow.count, max: restLow.count)]))
        }
        alternatives += tail
        return .choice(alternatives)
    }
}

/// A number schema's bounds, which must be integers.
struct NumberBounds: Equatable {
    var minimum: Int?
    var maximum: Int?
    var exclusiveMinimum = false
    var exclusiveMaximum = false

    init() {}

    init(_ schema: JSONValue, path: String) throws(GrammarError) {
        func integer(_ keyword: String) throws(GrammarError) -> Int? {
            switch schema[keyword] {
            case nil: return nil
            case .int(let value)?: return value
            case .double(let value)? where value == value.rounded() && abs(value) < 1e15: return Int(value)
            case .double?: throw .unsupportedKeyword("\(keyword) (a bound that is not an integer)", path: path)
            default: throw .invalidValue(keyword: keyword, path: path, reason: "must be a number")
            }
        }
        // Draft 4 spells exclusive bounds as booleans beside minimum/maximum.
        if case .bool(let flag)? = schema["exclusiveMinimum"] {
            minimum = try integer("minimum")
            exclusiveMinimum = flag
        } else if let value = try integer("exclusiveMinimum") {
            minimum = max(value, try integer("minimum") ?? value)
            exclusiveMinimum = minimum == value
        } else {
            minimum = try integer("minimum")
        }
        if case .bool(let flag)? = schema["exclusiveMaximum"] {
            maximum = try integer("maximum")
            exclusiveMaximum = flag
        } else if let value = try integer("exclusiveMaximum") {
            maximum = min(value, try integer("maximum") ?? value)
            exclusiveMaximum = maximum == value
        } else {
            maximum = try integer("maximum")
        }
    }

    var isEmpty: Bool { minimum == nil && maximum == nil }
}

extension StructuredOutputRequest {
    /// The byte automaton the output must follow; an unsupported or contradictory schema is an
    /// error naming the keyword and its place.
    public func grammar() throws(GrammarError) -> GrammarAutomaton {
        try SchemaCompiler.automaton(for: self)
    }
}
