import Testing
@testable import RouterCore
import Tokenizers

private func completion(_ json: String) throws(APIError) -> CompletionRequest {
    try CompletionRequest(body: try! JSONValue.parse(json))
}

private func chat(_ json: String) throws(APIError) -> ChatCompletionRequest {
    try ChatCompletionRequest(body: try! JSONValue.parse(json))
}

private func rejection(_ body: () throws -> Void) -> APIError? {
    do {
        try body()
        return nil
    } catch {
        return error as? APIError
    }
}

@Suite("Request parsing")
struct RequestParsingTests {
    @Test("a prompt may be a string, strings, token ids, or lists of token ids")
    func promptForms() throws {
        #expect(try completion(#"{"prompt":"hi"}"#).prompts == [.text("hi")])
        #expect(try completion(#"{"prompt":["a","b"]}"#).prompts == [.text("a"), .text("b")])
        #expect(try completion(#"{"prompt":[1,2,3]}"#).prompts == [.tokens([1, 2, 3])])
        #expect(try completion(#"{"prompt":[[1],[2,3]]}"#).prompts == [.tokens([1]), .tokens([2, 3])])
    }

    @Test("parameters are read with OpenAI's names and defaults")
    func parameters() throws {
        let request = try completion(#"""
            {"prompt":"x","max_tokens":7,"temperature":0,"top_p":0.5,"top_k":-1,"seed":-3,"stop":"\n",
             "n":2,"echo":true,"logprobs":3,"presence_penalty":0.5,"frequency_penalty":-0.5,
             "repetition_penalty":1.1,"ignore_eos":true,"skip_special_tokens":false,
             "stream":true,"stream_options":{"include_usage":true}}
            """#)
        #expect(request.options.maxTokens == 7)
        #expect(request.options.sampling.temperature == 0)
        #expect(request.options.sampling.topP == 0.5)
        #expect(request.options.sampling.topK == 0)
        #expect(request.options.seed == UInt64(bitPattern: -3))
        #expect(request.options.stop == ["\n"])
        #expect(request.options.n == 2)
        #expect(request.echo && request.logprobs == 3)
        #expect(request.options.ignoreEOS && !request.options.skipSpecialTokens)
        #expect(request.options.stream && request.options.includeUsage)
        #expect(request.options.sampling.repetitionPenalty == Float(1.1))
        let defaults = try completion(#"{"prompt":"x"}"#)
        #expect(defaults.options == GenerationOptions())
    }

    @Test("bad values are 400s that name the parameter", arguments: [
        (#"{"prompt":"x","temperature":-0.1}"#, "temperature"),
        (#"{"prompt":"x","top_p":0}"#, "top_p"),
        (#"{"prompt":"x","top_p":1.5}"#, "top_p"),
        // Valid doubles that the worker's 32-bit floats turn infinite or zero.
        (#"{"prompt":"x","temperature":1e39}"#, "temperature"),
        (#"{"prompt":"x","top_p":1e-50}"#, "top_p"),
        (#"{"prompt":"x","repetition_penalty":1e-50}"#, "repetition_penalty"),
        (#"{"prompt":"x","repetition_penalty":1e39}"#, "repetition_penalty"),
        (#"{"prompt":"x","n":0}"#, "n"),
        (#"{"prompt":"x","max_tokens":0}"#, "max_tokens"),
        (#"{"prompt":"x","logprobs":21}"#, "logprobs"),
        (#"{"prompt":"x","temperature":"hot"}"#, "temperature"),
        (#"{"prompt":"x","stop":[1]}"#, "stop"),
        (#"{"prompt":"x","stream":"yes"}"#, "stream"),
        (#"{"prompt":"x","stream_options":{"include_usage":true}}"#, "stream_options"),
        (#"{"prompt":[]}"#, "prompt"),
        (#"{"prompt":[1,"a"]}"#, "prompt"),
        (#"{"prompt":3}"#, "prompt"),
        (#"{"temperature":1}"#, "prompt"),
    ])
    func badCompletionValues(json: String, param: String) {
        let error = rejection { _ = try completion(json) }
        #expect(error?.status == 400)
        #expect(error?.param == param)
        #expect(error?.type == "invalid_request_error")
    }

    @Test("logit_bias, min_p and user are read; the bias map is keyed by token id")
    func samplingControls() throws {
        let request = try completion(#"{"prompt":"x","min_p":0.05,"logit_bias":{"7":-100,"11":2.5},"user":"u-1"}"#)
        #expect(request.options.sampling.minP == Float(0.05))
        #expect(request.options.sampling.logitBias == [7: -100, 11: 2.5])
        #expect(request.options.user == "u-1")
    }

    @Test("a field nothing honours is a 400 naming it; null fields count as absent", arguments: [
        (#"{"prompt":"x","guided_json":{}}"#, "guided_json", "unsupported_parameter"),
        (#"{"prompt":"x","frobnicate":1}"#, "frobnicate", "unrecognized_argument"),
        (#"{"prompt":"x","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}"#,
         "stream_options.continuous_usage_stats", "unrecognized_argument"),
        (#"{"messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}]}"#, "functions", "unsupported_parameter"),
        (#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"auto"}"#, "tool_choice", "invalid_value"),
        (#"{"messages":[{"role":"user","content":"x"}],"echo":true}"#, "echo", "unrecognized_argument"),
    ])
    func unreadFields(json: String, param: String, code: String) throws {
        let error = rejection {
            if json.contains("messages") { _ = try chat(json) } else { _ = try completion(json) }
        }
        #expect(error?.status == 400)
        #expect(error?.param == param)
        #expect(error?.code == code)
        #expect(try completion(#"{"prompt":"x","response_format":null,"frobnicate":null}"#).prompts == [.text("x")])
    }

    @Test("tool_choice, parallel_tool_calls and continue_final_message are read and checked")
    func toolFields() throws {
        let tools = #""tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}}]"#
        let user = #""messages":[{"role":"user","content":"x"}]"#
        #expect(try chat("{\(user)}").toolChoice == ToolChoice.none)
        #expect(try chat("{\(user),\(tools)}").toolChoice == .auto)
        #expect(try chat("{\(user),\(tools)," + #""tool_choice":"required"}"#).toolChoice == .required)
        #expect(try !chat("{\(user),\(tools)," + #""parallel_tool_calls":false}"#).parallelToolCalls)
        #expect(try chat("{\(user),\(tools)," + #""tool_choice":{"type":"function","function":{"name":"get_weather"}}}"#).toolChoice
                == .function("get_weather"))
        let prefill = #""messages":[{"role":"user","content":"x"},{"role":"assistant","content":"The"}]"#
        #expect(try chat("{\(prefill)," + #""continue_final_message":true,"add_generation_prompt":false}"#).continueFinalMessage)
        for (json, param) in [
            ("{\(user),\(tools)," + #""tool_choice":{"type":"function","function":{"name":"other"}}}"#, "tool_choice"),
            ("{\(user),\(tools)," + #""tool_choice":"sometimes"}"#, "tool_choice"),
            ("{\(prefill)," + #""continue_final_message":true}"#, "continue_final_message"),
            ("{\(user)," + #""continue_final_message":true,"add_generation_prompt":false}"#, "continue_final_message"),
            (#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
             "messages[0].tool_calls[0].function.arguments"),
        ] {
            let error = rejection { _ = try chat(json) }
            #expect(error?.param == param, "\(json)")
        }
    }

    @Test("an assistant tool-call message gets object arguments and a string content for the template")
    func toolCallMessages() throws {
        let request = try chat(#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"}]}"#)
        let assistant = request.messages[1]
        #expect(assistant["content"] == .string(""))
        guard case .array(let calls)? = assistant["tool_calls"] else { Issue.record("no tool_calls"); return }
        #expect(calls.first?["function"]?["arguments"] == .object([("a", .int(1))]))
    }

    @Test("response_format and structured_outputs are read into one structured-output request")
    func structuredOutputFields() throws {
        let user = #""messages":[{"role":"user","content":"x"}]"#
        #expect(try chat("{\(user)," + #""response_format":{"type":"json_object"}}"#).options.structuredOutput == .jsonObject)
        #expect(try chat("{\(user)," + #""response_format":{"type":"text"}}"#).options.structuredOutput == nil)
        #expect(try chat("{\(user)," + #""response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true,"schema":{"type":"integer"}}}}"#)
                    .options.structuredOutput == .jsonSchema(name: "n", schema: .object([("type", "integer")])))
        #expect(try completion(#"{"prompt":"x","structured_outputs":{"choice":["yes","no"]}}"#).options.structuredOutput == .choice(["yes", "no"]))
        #expect(try completion(#"{"prompt":"x","structured_outputs":{"regex":"[0-9]+"}}"#).options.structuredOutput == .regex("[0-9]+"))
        #expect(try completion(#"{"prompt":"x","structured_outputs":{"json":"{\"type\":\"null\"}"}}"#).options.structuredOutput
                == .jsonSchema(name: nil, schema: .object([("type", "null")])))
        for (json, param) in [
            ("{\(user)," + #""response_format":{"type":"yaml"}}"#, "response_format.type"),
            ("{\(user)," + #""response_format":{"type":"json_schema"}}"#, "response_format.json_schema"),
            ("{\(user)," + #""response_format":{"type":"json_schema","json_schema":{"name":"n"}}}"#, "response_format.json_schema.schema"),
            ("{\(user)," + #""response_format":{"type":"json_object","schema":{}}}"#, "response_format.schema"),
            ("{\(user)," + #""response_format":"json"}"#, "response_format"),
            (#"{"prompt":"x","structured_outputs":{"grammar":"root ::= x"}}"#, "structured_outputs.grammar"),
            (#"{"prompt":"x","structured_outputs":{"choice":[]}}"#, "structured_outputs.choice"),
            (#"{"prompt":"x","structured_outputs":{"choice":["a"],"regex":"b"}}"#, "structured_outputs"),
            (#"{"prompt":"x","structured_outputs":{"regex":"a"},"response_format":{"type":"json_object"}}"#, "structured_outputs"),
        ] {
            let error = rejection {
                if json.contains("messages") { _ = try chat(json) } else { _ = try completion(json) }
            }
            #expect(error?.param == param, "\(json)")
        }
    }

    @Test("chat: content parts are joined, other keys pass through, bad messages are named", arguments: [
        (#"{"model":"m"}"#, "messages"),
        (#"{"messages":[]}"#, "messages"),
        (#"{"messages":"hi"}"#, "messages"),
        (#"{"messages":[{"content":"x"}]}"#, "messages[0].role"),
        (#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#, "messages[0].content[0].type"),
        (#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":21,"logprobs":true}"#, "top_logprobs"),
        (#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#, "top_logprobs"),
        (#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":0}"#, "max_completion_tokens"),
    ])
    func badChat(json: String, param: String) {
        let error = rejection { _ = try chat(json) }
        #expect(error?.status == 400)
        #expect(error?.param == param)
    }

    @Test("chat content-part arrays become one string; tools keep their order")
    func chatContent() throws {
        let request = try chat(#"""
            {"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"name":"u"}],
             "tools":[{"type":"function","function":{"name":"f","parameters":{"z":1,"a":2}}}],
             "logprobs":true,"top_logprobs":2,"max_completion_tokens":5}
            """#)
        #expect(request.messages == [.object([("role", "user"), ("content", "a\nb"), ("name", "u")])])
        #expect(request.tools?.first?.serialized == #"{"type":"function","function":{"name":"f","parameters":{"z":1,"a":2}}}"#)
        #expect(request.logprobs && request.topLogprobs == 2)
        #expect(request.options.maxTokens == 5)
    }

    @Test("errors serialise in OpenAI's shape")
    func errorShape() {
        let error = APIError.invalidValue("n", "must be at least 1, got 0")
        #expect(error.json.serialized
            == #"{"error":{"message":"'n' must be at least 1, got 0","type":"invalid_request_error","param":"n","code":"invalid_value"}}"#)
        #expect(APIError.modelNotFound("x").status == 404)
        #expect(APIError.modelNotFound("x").code == "model_not_found")
    }
}
