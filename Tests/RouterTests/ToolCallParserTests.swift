import Foundation
import Testing
@testable import RouterCore

/// The committed copies of real chat templates (Tests/JinjaTests/Fixtures/chat-templates).
private func template(_ name: String) throws -> String {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("JinjaTests/Fixtures/chat-templates/\(name).jinja")
    return try String(contentsOf: url, encoding: .utf8)
}

/// Feeds `text` in pieces of `size` characters and collects the events.
private func streamed(_ text: String, format: ToolCallFormat, size: Int, parallel: Bool = true) -> (content: String, calls: [ToolCall]) {
    var stream = ToolCallStream(format: format, parallel: parallel)
    var content = ""
    var calls: [ToolCall] = []
    var index = text.startIndex
    func take(_ events: [ToolCallEvent]) {
        for event in events {
            switch event {
            case .content(let piece): content += piece
            case .call(let call): calls.append(call)
            }
        }
    }
    while index < text.endIndex {
        let end = text.index(index, offsetBy: size, limitedBy: text.endIndex) ?? text.endIndex
        take(stream.feed(String(text[index..<end])))
        index = end
    }
    take(stream.finish())
    #expect(content == stream.content)
    #expect(calls == stream.calls)
    return (content, calls)
}

/// Name and arguments, ids left out (they are random).
private func shape(_ calls: [ToolCall]) -> [String] { calls.map { "\($0.name) \($0.arguments)" } }

@Suite("Tool-call parsing")
struct ToolCallParserTests {
    @Test("the format is read from real templates' markers; a template without tools has none")
    func detection() throws {
        #expect(ToolCallFormat.detect(template: try template("Qwen-Qwen2.5-7B-Instruct")) == .hermes)
        #expect(ToolCallFormat.detect(template: try template("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use")) == .hermes)
        #expect(ToolCallFormat.detect(template: try template("meta-llama-Llama-3.1-8B-Instruct")) == .llama3JSON)
        #expect(ToolCallFormat.detect(template: try template("mistralai-Mistral-Nemo-Instruct-2407")) == .mistral)
        #expect(ToolCallFormat.detect(template: try template("SmolLM2-135M-Instruct")) == nil)
    }

    @Test("Hermes: content, then calls; any split of the stream gives the same result", arguments: [1, 2, 3, 7, 1000])
    func hermes(size: Int) {
        let text = #"Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "note": "</tool"}}</tool_call>"#
            + "\n" + #"<tool_call>{"name": "get_time", "arguments": "{\"zone\": \"CET\"}"}</tool_call>"#
        let result = streamed(text, format: .hermes, size: size)
        #expect(result.content == "Let me check.")
        #expect(shape(result.calls) == [#"get_weather {"city":"Paris","note":"</tool"}"#, #"get_time {"zone":"CET"}"#])
        #expect(result.calls.allSatisfy { $0.id.hasPrefix("call_") && $0.id.count == 29 })
        #expect(Set(result.calls.map(\.id)).count == 2)
    }

    @Test("Hermes: a call that does not parse, or never closes, is given back as content")
    func hermesBroken() {
        #expect(shape(streamed("<tool_call>{not json}</tool_call> ok", format: .hermes, size: 4).calls).isEmpty)
        #expect(streamed("<tool_call>{not json}</tool_call> ok", format: .hermes, size: 4).content == "<tool_call>{not json}</tool_call> ok")
        #expect(streamed(#"a <tool_call>{"name": "f""#, format: .hermes, size: 3).content == #"a <tool_call>{"name": "f""#)
        #expect(streamed("a <tool_ca", format: .hermes, size: 1).content == "a <tool_ca")
    }

    @Test("parallel_tool_calls false keeps the first call only")
    func single() {
        let text = #"<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>"#
        #expect(shape(streamed(text, format: .hermes, size: 5, parallel: false).calls) == ["a {}"])
    }

    @Test("Llama 3: the whole answer as calls joined by ';', with or without <|python_tag|>", arguments: [1, 4, 1000])
    func llama(size: Int) {
        let text = #" {"name": "search", "parameters": {"q": "a;b"}}; {"name": "open", "parameters": {"id": 3}}"#
        let result = streamed(text, format: .llama3JSON, size: size)
        #expect(result.content.isEmpty)
        #expect(shape(result.calls) == [#"search {"q":"a;b"}"#, #"open {"id":3}"#])
        #expect(shape(streamed(#"<|python_tag|>{"name": "f", "arguments": {}}"#, format: .llama3JSON, size: size).calls) == ["f {}"])
        let prose = streamed("Paris is the capital. {\"name\": 1}", format: .llama3JSON, size: size)
        #expect(prose.content == "Paris is the capital. {\"name\": 1}" && prose.calls.isEmpty)
        let notCall = streamed(#"{"answer": 42}"#, format: .llama3JSON, size: size)
        #expect(notCall.content == #"{"answer": 42}"# && notCall.calls.isEmpty)
    }

    @Test("Mistral: [TOOL_CALLS] and a JSON array; ids of 9 characters", arguments: [1, 5, 1000])
    func mistral(size: Int) {
        let text = #"Sure.[TOOL_CALLS][{"name": "f", "arguments": {"x": "]}"}}, {"name": "g", "arguments": {}}]"#
        let result = streamed(text, format: .mistral, size: size)
        #expect(result.content == "Sure.")
        #expect(shape(result.calls) == [#"f {"x":"]}"}"#, "g {}"])
        #expect(result.calls.allSatisfy { $0.id.count == 9 && $0.id.allSatisfy { $0.isLetter || $0.isNumber } })
    }
}
