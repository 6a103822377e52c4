import Foundation

/// How a model family writes tool calls in its output text (vLLM's `--tool-call-parser` names).
public enum ToolCallFormat: String, Sendable, CaseIterable {
    /// Hermes / Qwen / SmolLM3: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, any number.
    case hermes
    /// Llama 3.x: the whole answer is `{"name": …, "parameters": {…}}` (several joined by `;`),
    /// optionally after `<|python_tag|>`.
    case llama3JSON = "llama3_json"
    /// Mistral: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`.
    case mistral

    /// The format a chat template teaches its model, read from the markers it writes.
    public static func detect(template source: String) -> ToolCallFormat? {
        if source.contains("<tool_call>") { return .hermes }
        if source.contains("[TOOL_CALLS]") { return .mistral }
        if source.contains("<|python_tag|>") || source.contains("\"parameters\": ") { return .llama3JSON }
        return nil
    }

    /// The marker is a special token in the family's real vocabulary, so the text must keep
    /// special tokens for the parser to see it.
    public var needsSpecialTokens: Bool { self != .hermes }

    /// A fresh call id as the family's templates expect it (Mistral's check for 9 characters).
    public func makeCallID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        let count = self == .mistral ? 9 : 24
        let random = String((0..<count).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
        return self == .mistral ? random : "call_" + random
    }

    /// The marker a call opens with.
    var opening: String {
        switch self {
        case .hermes: return "<tool_call>"
        case .mistral: return "[TOOL_CALLS]"
        case .llama3JSON: return "<|python_tag|>"
        }
    }
}

/// One call the model asked for: `arguments` is JSON text, as OpenAI's API carries it.
public struct ToolCall: Sendable, Equatable {
    public var id: String
    public var name: String
    public var arguments: String

    /// `{"id", "type": "function", "function": {"name", "arguments"}}`.
    var json: JSONValue {
        .object([("id", .string(id)), ("type", "function"),
                 ("function", .object([("name", .string(name)), ("arguments", .string(arguments))]))])
    }
}

/// A call the grammar forces (`tool_choice` "required" or a named function): the whole output
/// is JSON in a shape fixed by the server, not the family's own markers, and it is parsed once
/// it ends (as vLLM enforces these choices).
public enum ForcedToolCall: Sendable, Equatable {
    /// `[{"name": …, "parameters": {…}}, …]`: one or more calls of any of the tools.
    case anyTool
    /// The output is this function's arguments object.
    case function(String)
}

/// What the parser releases from a stream of output text.
public enum ToolCallEvent: Sendable, Equatable {
    case content(String)
    case call(ToolCall)
}

/// Splits a choice's output text into content and tool calls as it streams. Text that might
/// open a call is held back until it is known; a call that does not parse is given back as
/// content, as vLLM's parsers do.
public struct ToolCallStream: Sendable {
    public let format: ToolCallFormat
    /// At most one call is released when the client turned `parallel_tool_calls` off.
    public let parallel: Bool
    /// Set when the grammar forced the output into a call.
    public let forced: ForcedToolCall?
    private var pending = ""
    private var inCall = false
    /// Llama 3 decides once, at the first non-blank text, whether the answer is a call.
    private var decided = false
    public private(set) var calls: [ToolCall] = []
    /// The content released so far.
    public private(set) var content = ""

    public init(format: ToolCallFormat, parallel: Bool = true, forced: ForcedToolCall? = nil) {
        self.format = format
        self.parallel = parallel
        self.forced = forced
    }

    /// Feeds released text; returns what is now known.
    public mutating func feed(_ text: String) -> [ToolCallEvent] {
        pending += text
        return drain(final: false)
    }

    /// The output ended: releases what was held back.
    public mutating func finish() -> [ToolCallEvent] {
        drain(final: true)
    }

    /// The whole output at once.
    public static func parse(_ text: String, format: ToolCallFormat, parallel: Bool = true,
                             forced: ForcedToolCall? = nil) -> (content: String, calls: [ToolCall]) {
        var stream = ToolCallStream(format: format, parallel: parallel, forced: forced)
        _ = stream.feed(text)
        _ = stream.finish()
        return (stream.content, stream.calls)
    }

    private mutating func drain(final: Bool) -> [ToolCallEvent] {
        var events: [ToolCallEvent] = []
        func emitContent(_ text: String) {
            guard !text.isEmpty else { return }
            // Blank text around calls is layout, not content.
            if !calls.isEmpty, text.allSatisfy(\.isWhitespace) { return }
            content += text
            if case .content(let previous)? = events.last {
                events[events.count - 1] = .content(previous + text)
            } else {
                events.append(.content(text))
            }
        }
        func emitCall(_ call: ToolCall) {
            guard parallel || calls.isEmpty else { return }
            calls.append(call)
            events.append(.call(call))
        }
        if let forced {
            // Held until the end: a cut-off output is given back as content.
            guard final else { return events }
            let parsed = try? JSONValue.parse(pending)
            switch (forced, parsed) {
            case (.function(let name), .object?):
                emitCall(ToolCall(id: format.makeCallID(), name: name, arguments: parsed!.serialized))
            case (.anyTool, .array(let items)?):
                let calls = items.compactMap { Self.call(from: $0, argumentKeys: ["parameters"], format: format) }
                if calls.count == items.count, !calls.isEmpty { calls.forEach(emitCall) } else { emitContent(pending) }
            default:
                emitContent(pending)
            }
            pending = ""
            return events
        }
        while true {
            if format == .llama3JSON {
                if !decided {
                    let trimmed = pending.drop { $0.isWhitespace }
                    if trimmed.isEmpty { break }
                    if trimmed.hasPrefix(format.opening) || trimmed.hasPrefix("{") {
                        decided = true
                        inCall = true
                    } else if !final, format.opening.hasPrefix(trimmed) {
                        break  // might still become <|python_tag|>
                    } else {
                        decided = true
                    }
                    continue
                }
                guard inCall else {
                    emitContent(pending)
                    pending = ""
                    break
                }
                // The whole answer is the calls: parse it once it is complete.
                guard final else { break }
                var body = Substring(pending).drop { $0.isWhitespace }
                if body.hasPrefix(format.opening) { body = body.dropFirst(format.opening.count) }
                if let parsed = Self.llamaCalls(String(body), format: format) {
                    parsed.forEach(emitCall)
                } else {
                    emitContent(pending)
                }
                pending = ""
                break
            }

            if !inCall {
                if let range = pending.range(of: format.opening) {
                    emitContent(String(pending[..<range.lowerBound]))
                    pending = String(pending[range.upperBound...])
                    inCall = true
                    continue
                }
                // Hold back a tail that could be the start of the marker.
                let keep = final ? 0 : Self.markerPrefixLength(pending, marker: format.opening)
                emitContent(String(pending.dropLast(keep)))
                pending = String(pending.suffix(keep))
                break
            }

            switch format {
            case .hermes:
                guard let end = pending.range(of: "</tool_call>") else {
                    if final {
                        emitContent(format.opening + pending)
                        pending = ""
                    }
                    return events
                }
                let body = String(pending[..<end.lowerBound])
                if let call = Self.call(fromJSON: body, argumentKeys: ["arguments", "parameters"], format: format) {
                    emitCall(call)
                } else {
                    emitContent(format.opening + body + "</tool_call>")
                }
                pending = String(pending[end.upperBound...])
                inCall = false
            case .mistral:
                let bytes = Array(pending.utf8)
                guard let end = Self.jsonValueEnd(bytes, from: 0) else {
                    if final {
                        emitContent(format.opening + pending)
                        pending = ""
                    }
                    return events
                }
                let body = String(decoding: bytes[..<end], as: UTF8.self)
                if case .array(let items)? = try? JSONValue.parse(body),
                   case let parsed = items.compactMap({ Self.call(from: $0, argumentKeys: ["arguments"], format: format) }),
                   parsed.count == items.count, !parsed.isEmpty {
                    parsed.forEach(emitCall)
                } else {
                    emitContent(format.opening + body)
                }
                pending = String(decoding: bytes[end...], as: UTF8.self)
                inCall = false
            case .llama3JSON:
                return events
            }
        }
        return events
    }

    /// Llama 3's answer as calls: JSON objects separated by `;`, or nil when it is not that.
    private static func llamaCalls(_ text: String, format: ToolCallFormat) -> [ToolCall]? {
        let bytes = Array(text.utf8)
        var calls: [ToolCall] = []
        var index = 0
        while true {
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\n") { index += 1 }
            guard let end = jsonValueEnd(bytes, from: index),
                  let call = call(fromJSON: String(decoding: bytes[index..<end], as: UTF8.self),
                                  argumentKeys: ["parameters", "arguments"], format: format)
            else { return nil }
            calls.append(call)
            index = end
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\n") { index += 1 }
            if index == bytes.count { return calls }
            guard bytes[index] == UInt8(ascii: ";") else { return nil }
            index += 1
        }
    }

    private static func call(fromJSON text: String, argumentKeys: [String], format: ToolCallFormat) -> ToolCall? {
        guard let value = try? JSONValue.parse(text) else { return nil }
        return call(from: value, argumentKeys: argumentKeys, format: format)
    }

    /// `{"name": string, "<argument key>": object}` as a call; arguments default to `{}`.
    private static func call(from value: JSONValue, argumentKeys: [String], format: ToolCallFormat) -> ToolCall? {
        guard case .object = value, case .string(let name)? = value["name"], !name.isEmpty else { return nil }
        var arguments: JSONValue = .object([])
        for key in argumentKeys {
            if let found = value[key] {
                arguments = found
                break
            }
        }
        // Some models write the arguments as a JSON string already.
        if case .string(let text) = arguments, let parsed = try? JSONValue.parse(text) { arguments = parsed }
        guard case .object = arguments else { return nil }
        return ToolCall(id: format.makeCallID(), name: name, arguments: arguments.serialized)
    }

    /// The longest tail of `text` that is a proper prefix of `marker`.
    static func markerPrefixLength(_ text: String, marker: String) -> Int {
        var length = min(text.count, marker.count - 1)
        while length > 0 {
            if marker.hasPrefix(text.suffix(length)) { return length }
            length -= 1
        }
        return 0
    }

    /// The index just past the JSON object or array starting at `start` (after blanks), or nil
    /// when it is not complete yet. Strings and escapes are followed, so brackets inside them
    /// do not count.
    static func jsonValueEnd(_ bytes: [UInt8], from start: Int) -> Int? {
        var index = start
        while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\n")
            || bytes[index] == UInt8(ascii: "\t") || bytes[index] == UInt8(ascii: "\r") { index += 1 }
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") || bytes[index] == UInt8(ascii: "[") else { return nil }
        var depth = 0
        var inString = false
        var escaped = false
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 { return index }
            default: break
            }
        }
        return nil
    }
}
