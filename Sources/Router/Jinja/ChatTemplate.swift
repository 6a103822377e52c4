import Foundation

/// A chat template parsed once and rendered per request, with the environment Hugging Face
/// transformers gives `apply_chat_template`: trim_blocks, lstrip_blocks, loop controls, an
/// immutable sandbox, `tojson` without ASCII escaping, `raise_exception` and `strftime_now`.
///
/// The reference is Python's jinja2 3.1 with default `Undefined`; fixtures generated from it pin
/// the behaviour down. Known differences, none of which real chat templates rely on:
/// - `range()`, `map`, `select`, `dict.items()` give lists (Python prints those as `range(0, 3)`,
///   generator objects or `dict_items([...])`); printing a bound method differs likewise.
/// - Integers are 64-bit (Python's are unbounded): overflowing arithmetic falls back to floats.
/// - Strings from `escape`/`safe` are plain strings, so `+` with them does not HTML-escape.
/// - The filters `filesizeformat`, `random`, `slice`, `urlencode`, `urlize`, `wordwrap`,
///   `xmlattr` and the globals `cycler`, `joiner`, `lipsum` are not available.
/// - Errors inside a multi-line tag name the line the tag starts on.
public struct ChatTemplate: Sendable {
    private let nodes: [Node]
    /// The template's text.
    public let source: String

    /// Parses the template; a syntax error is thrown as `JinjaError.syntax` with its line.
    public init(source: String) throws {
        nodes = try Parser.parse(source)
        self.source = source
    }

    /// Renders a conversation. `tools` nil is passed to the template as `none` (as transformers
    /// does), `documents` likewise unless `extra` supplies it; `extra` holds further keyword
    /// arguments (`enable_thinking`, `date_string`, ...). `now` and `timeZone` feed `strftime_now`.
    public func render(
        messages: JinjaValue, tools: JinjaValue?, addGenerationPrompt: Bool,
        bosToken: String, eosToken: String,
        extra: [String: JinjaValue] = [:], now: Date = Date(), timeZone: TimeZone = .current
    ) throws -> String {
        let interpreter = Interpreter(now: now, timeZone: timeZone)
        let globals = Scope(parent: nil)
        globals.variables = ChatTemplate.builtinGlobals
        let context = Scope(parent: globals)
        context.variables["documents"] = Value.none
        for (name, value) in extra { context.variables[name] = Value(value) }
        context.variables["messages"] = Value(messages)
        context.variables["tools"] = tools.map(Value.init) ?? Value.none
        context.variables["add_generation_prompt"] = .bool(addGenerationPrompt)
        context.variables["bos_token"] = .string(bosToken)
        context.variables["eos_token"] = .string(eosToken)
        let top = Scope(parent: context)
        _ = try interpreter.execute(nodes, in: top)
        return interpreter.output
    }

    // `Value` is not Sendable (it has reference cases for namespaces and loops), but this table is
    // immutable and holds only stateless functions, so sharing it between renders is safe.
    nonisolated(unsafe) private static let builtinGlobals: [String: Value] = [
        "raise_exception": .function(BuiltinFunction(name: "raise_exception") { interpreter, arguments in
            let message = arguments.value(0, "message")?.pythonString ?? ""
            throw JinjaError.raised(message, line: interpreter.line)
        }),
        "strftime_now": .function(BuiltinFunction(name: "strftime_now") { interpreter, arguments in
            guard case .string(let format)? = arguments.value(0, "format") else {
                throw interpreter.runtimeError("strftime_now() needs a format string")
            }
            return .string(Strftime.format(format, date: interpreter.now, timeZone: interpreter.timeZone))
        }),
        "range": .function(BuiltinFunction(name: "range") { interpreter, arguments in
            let bounds = try arguments.positional.map { value -> Int in
                guard let number = value.integerValue else {
                    throw interpreter.runtimeError("'\(value.typeName)' object cannot be interpreted as an integer")
                }
                return number
            }
            var (start, stop, step) = (0, 0, 1)
            switch bounds.count {
            case 1: stop = bounds[0]
            case 2: (start, stop) = (bounds[0], bounds[1])
            case 3: (start, stop, step) = (bounds[0], bounds[1], bounds[2])
            default: throw interpreter.runtimeError("range expected 1 to 3 arguments, got \(bounds.count)")
            }
            guard step != 0 else { throw interpreter.runtimeError("range() arg 3 must not be zero") }
            let span = stride(from: start, to: stop, by: step)
            // The sandbox caps ranges so a template cannot exhaust memory.
            var count = 0
            for _ in span {
                count += 1
                if count > 100_000 { break }
            }
            guard count <= 100_000 else {
                throw interpreter.runtimeError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")
            }
            return .list(span.map(Value.int))
        }),
        "namespace": .function(BuiltinFunction(name: "namespace") { interpreter, arguments in
            let storage = NamespaceStorage()
            for value in arguments.positional {
                guard case .dict(let dict) = value else { throw interpreter.runtimeError("namespace() takes a mapping") }
                for (key, item) in zip(dict.keys, dict.values) { storage.attributes.set(key, item) }
            }
            for (name, value) in arguments.keyword {
                guard !name.hasPrefix("_") else {
                    throw JinjaError.security(
                        "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(name)'.",
                        line: interpreter.line)
                }
                storage.attributes.set(.string(name), value)
            }
            return .namespace(storage)
        }),
        "dict": .function(BuiltinFunction(name: "dict") { interpreter, arguments in
            var dict = PythonDict()
            for value in arguments.positional {
                switch value {
                case .dict(let other):
                    for (key, item) in zip(other.keys, other.values) { dict.set(key, item) }
                default:
                    for pair in try interpreter.iterate(value) {
                        let items = try interpreter.iterate(pair)
                        guard items.count == 2 else { throw interpreter.runtimeError("dict() sequence elements must have length 2") }
                        dict.set(items[0], items[1])
                    }
                }
            }
            for (name, value) in arguments.keyword { dict.set(.string(name), value) }
            return .dict(dict)
        }),
    ]
}
