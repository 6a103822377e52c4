import Foundation
import Hummingbird
import HummingbirdTesting
import Jinja
import Testing
@testable import RouterCore
import Tokenizers

private let testTemplate = """
    {% for message in messages %}<{{ message.role }}>{{ message.content }}
    {% endfor %}{% if tools %}[tools:{{ tools | length }}]{% endif %}{% if add_generation_prompt %}<assistant>{% endif %}
    """

/// A router over the scripted runner, with its step loop running for the duration of `body`.
private func withServer<Value: Sendable>(
    runner: ScriptedStepRunner = ScriptedStepRunner(), template: String? = testTemplate, healthy: Bool = true,
    settings: HTTPServerSettings = HTTPServerSettings(),
    configuration: SchedulerConfiguration = SchedulerConfiguration(maxSequences: 16, maxBatchedTokens: 32),
    _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Value
) async throws -> Value {
    let scheduler = Scheduler(
        configuration: configuration,
        limits: SchedulerModelLimits(maxContextLength: runner.model.maxContextLength,
                                     kvBlockCount: runner.model.kvBlockCount, kvBlockSize: runner.model.kvBlockSize))
    let model = ServedModel(name: "test-model", tokenizer: ByteTokenizer(),
                            chatTemplate: try template.map { try ChatTemplate(source: $0) },
                            maxContextLength: runner.model.maxContextLength, vocabularySize: runner.model.vocabSize,
                            toolCallFormat: .hermes)
    let endpoints = OpenAIEndpoints(model: model, scheduler: scheduler)
    let loop = StepLoop(scheduler: scheduler, runner: runner)
    let loopTask = Task { try await loop.run() }
    defer { loopTask.cancel() }
    let app = Application(router: OpenAIServer.makeRouter(endpoints: endpoints, settings: settings, health: { healthy }))
    return try await app.test(.router) { client in try await body(client) }
}

private func post(_ client: any TestClientProtocol, _ path: String, _ json: String) async throws -> (Int, JSONValue?, String) {
    try await client.execute(uri: path, method: .post, headers: [.contentType: "application/json"],
                             body: ByteBuffer(string: json)) { response in
        let text = String(buffer: response.body)
        return (response.status.code, try? JSONValue.parse(text), text)
    }
}

private func get(_ client: any TestClientProtocol, _ path: String) async throws -> (Int, JSONValue?) {
    try await client.execute(uri: path, method: .get) { response in
        (response.status.code, try? JSONValue.parse(String(buffer: response.body)))
    }
}

private func string(_ value: JSONValue?) -> String? {
    if case .string(let text)? = value { return text }
    return nil
}

private func int(_ value: JSONValue?) -> Int? {
    if case .int(let number)? = value { return number }
    return nil
}

private func array(_ value: JSONValue?) -> [JSONValue] {
    if case .array(let items)? = value { return items }
    return []
}

/// The JSON payloads of an SSE body, checking the framing on the way.
private func ssePayloads(_ text: String) throws -> [JSONValue] {
    #expect(text.hasSuffix("data: [DONE]\n\n"))
    let payloads = ServerSentEvents.payloads(in: text)
    #expect(payloads.last == "[DONE]")
    for block in text.components(separatedBy: "\n\n").dropLast() {
        #expect(block.hasPrefix("data: "), "every event is one data line: \(block)")
    }
    return try payloads.dropLast().map { try JSONValue.parse($0) }
}

@Suite("OpenAI HTTP API")
struct HTTPServerTests {
    @Test("/v1/models lists the served model; /health is 200 when workers are up and 503 otherwise")
    func modelsAndHealth() async throws {
        try await withServer { client in
            let (status, body) = try await get(client, "/v1/models")
            #expect(status == 200)
            #expect(string(body?["object"]) == "list")
            #expect(string(array(body?["data"]).first?["id"]) == "test-model")
            #expect(try await get(client, "/health").0 == 200)
        }
        try await withServer(healthy: false) { client in
            let (status, body) = try await get(client, "/health")
            #expect(status == 503)
            #expect(string(body?["error"]?["type"]) == "service_unavailable")
        }
    }

    @Test("a completion has OpenAI's shape, the scripted text and exact usage")
    func completion() async throws {
        try await withServer { client in
            let (status, body, _) = try await post(client, "/v1/completions",
                                                   #"{"model":"test-model","prompt":"hi","max_tokens":4,"temperature":0}"#)
            #expect(status == 200)
            #expect(string(body?["id"])?.hasPrefix("cmpl-") == true)
            #expect(string(body?["object"]) == "text_completion")
            #expect(string(body?["model"]) == "test-model")
            #expect(int(body?["created"]) != nil)
            let choice = array(body?["choices"]).first
            #expect(string(choice?["text"]) == scriptedText(from: 2, count: 4))
            #expect(int(choice?["index"]) == 0)
            #expect(choice?["logprobs"] == .null)
            #expect(string(choice?["finish_reason"]) == "length")
            #expect(body?["usage"] == .object([("prompt_tokens", 2), ("completion_tokens", 4), ("total_tokens", 6),
                                               ("prompt_tokens_details", .object([("cached_tokens", 0)]))]))
        }
    }

    @Test("a top_k past Int32 (no limit in effect) is served, not a crash of the router")
    func hugeTopK() async throws {
        try await withServer { client in
            let (status, body, _) = try await post(client, "/v1/completions",
                                                   #"{"prompt":"hi","max_tokens":2,"top_k":10000000000}"#)
            #expect(status == 200)
            #expect(string(array(body?["choices"]).first?["text"]) == scriptedText(from: 2, count: 2))
        }
    }

    @Test("a stop string cuts the text before it; an EOS ends with stop and counts as a token")
    func stops() async throws {
        try await withServer { client in
            let (_, body, _) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":10,"stop":["ef","zz"]}"#)
            let choice = array(body?["choices"]).first
            #expect(string(choice?["text"]) == "cd")
            #expect(string(choice?["finish_reason"]) == "stop")
        }
        try await withServer(runner: ScriptedStepRunner(eosAtPosition: 5)) { client in
            let (_, body, _) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":10}"#)
            let choice = array(body?["choices"]).first
            #expect(string(choice?["text"]) == "cde")
            #expect(string(choice?["finish_reason"]) == "stop")
            #expect(int(body?["usage"]?["completion_tokens"]) == 4)
            let (_, ignoring, _) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":6,"ignore_eos":true}"#)
            #expect(string(array(ignoring?["choices"]).first?["finish_reason"]) == "length")
        }
    }

    @Test("several prompts times n give prompt-major choice indexes")
    func manyChoices() async throws {
        try await withServer { client in
            let (status, body, _) = try await post(client, "/v1/completions", #"{"prompt":["ab","abc"],"n":2,"max_tokens":2}"#)
            #expect(status == 200)
            let choices = array(body?["choices"])
            #expect(choices.compactMap { int($0["index"]) } == [0, 1, 2, 3])
            #expect(choices.compactMap { string($0["text"]) } == [scriptedText(from: 2, count: 2), scriptedText(from: 2, count: 2),
                                                                  scriptedText(from: 3, count: 2), scriptedText(from: 3, count: 2)])
            #expect(int(body?["usage"]?["prompt_tokens"]) == 5)
            #expect(int(body?["usage"]?["completion_tokens"]) == 8)
        }
    }

    @Test("echo with logprobs returns the prompt's tokens first, the first logprob null")
    func echoLogprobs() async throws {
        try await withServer { client in
            let (_, body, _) = try await post(client, "/v1/completions", #"{"prompt":"hey","max_tokens":2,"echo":true,"logprobs":1}"#)
            let choice = array(body?["choices"]).first
            #expect(string(choice?["text"]) == "hey" + scriptedText(from: 3, count: 2))
            let logprobs = choice?["logprobs"]
            #expect(array(logprobs?["tokens"]).compactMap(string) == ["h", "e", "y"] + scriptedText(from: 3, count: 2).map(String.init))
            let values = array(logprobs?["token_logprobs"])
            #expect(values.first == .null)
            #expect(values.dropFirst().map { $0 } == [.double(-1), .double(-2), .double(-0.5), .double(-0.5)])
            #expect(array(logprobs?["top_logprobs"]).first == .null)
            #expect(array(logprobs?["text_offset"]).compactMap(int) == [0, 1, 2, 3, 4])
            #expect(array(logprobs?["top_logprobs"]).last == .object([(scriptedText(from: 4, count: 1), .double(-0.5))]))
        }
    }

    @Test("a streamed completion is SSE chunks whose text adds up, then usage, then [DONE]")
    func streamedCompletion() async throws {
        try await withServer { client in
            let (status, _, text) = try await post(client, "/v1/completions",
                                                   #"{"prompt":"hi","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#)
            #expect(status == 200)
            let chunks = try ssePayloads(text)
            let withChoices = chunks.filter { !array($0["choices"]).isEmpty }
            #expect(withChoices.allSatisfy { string($0["object"]) == "text_completion" })
            #expect(withChoices.compactMap { string(array($0["choices"]).first?["text"]) }.joined() == scriptedText(from: 2, count: 5))
            #expect(string(array(withChoices.last?["choices"]).first?["finish_reason"]) == "length")
            let last = try #require(chunks.last)
            #expect(array(last["choices"]).isEmpty)
            #expect(int(last["usage"]?["total_tokens"]) == 7)
            #expect(Set(chunks.compactMap { string($0["id"]) }).count == 1)
        }
    }

    @Test("a streamed stop string never leaks a prefix of itself")
    func streamedStop() async throws {
        try await withServer { client in
            let (_, _, text) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":10,"stop":"efx","stream":true}"#)
            let chunks = try ssePayloads(text)
            let pieces = chunks.compactMap { string(array($0["choices"]).first?["text"]) }
            #expect(pieces.joined() == scriptedText(from: 2, count: 10))
            #expect(chunks.allSatisfy { $0["usage"] == nil }, "no usage member unless stream_options asks for it")
            let (_, _, stopped) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":10,"stop":"efg","stream":true}"#)
            let stoppedPieces = try ssePayloads(stopped).compactMap { string(array($0["choices"]).first?["text"]) }
            #expect(stoppedPieces.joined() == "cd")
            #expect(!stoppedPieces.contains { $0.contains("e") })
        }
    }

    @Test("chat renders the template, answers as the assistant, and streams role first")
    func chat() async throws {
        try await withServer { client in
            let request = #"{"model":"test-model","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":3}"#
            let (status, body, _) = try await post(client, "/v1/chat/completions", request)
            #expect(status == 200)
            #expect(string(body?["id"])?.hasPrefix("chatcmpl-") == true)
            #expect(string(body?["object"]) == "chat.completion")
            let promptTokens = "<user>hi\n<assistant>".utf8.count
            let choice = array(body?["choices"]).first
            #expect(choice?["message"] == .object([("role", "assistant"), ("content", .string(scriptedText(from: promptTokens, count: 3)))]))
            #expect(string(choice?["finish_reason"]) == "length")
            #expect(int(body?["usage"]?["prompt_tokens"]) == promptTokens)

            let streamed = request.replacingOccurrences(of: "\"max_tokens\":3", with: "\"max_tokens\":3,\"stream\":true")
            let (_, _, text) = try await post(client, "/v1/chat/completions", streamed)
            let chunks = try ssePayloads(text)
            #expect(chunks.allSatisfy { string($0["object"]) == "chat.completion.chunk" })
            #expect(array(chunks.first?["choices"]).first?["delta"] == .object([("role", "assistant"), ("content", "")]))
            let content = chunks.compactMap { string(array($0["choices"]).first?["delta"]?["content"]) }.joined()
            #expect(content == scriptedText(from: promptTokens, count: 3))
            #expect(string(array(chunks.last?["choices"]).first?["finish_reason"]) == "length")
        }
    }

    @Test("chat logprobs list each token with its bytes and alternatives; tools reach the template")
    func chatLogprobsAndTools() async throws {
        try await withServer { client in
            let (_, body, _) = try await post(client, "/v1/chat/completions", #"""
                {"messages":[{"role":"user","content":"x"}],"max_tokens":2,"logprobs":true,"top_logprobs":2,
                 "tools":[{"type":"function","function":{"name":"f"}}]}
                """#)
            let promptTokens = "<user>x\n[tools:1]<assistant>".utf8.count
            #expect(int(body?["usage"]?["prompt_tokens"]) == promptTokens)
            let content = array(array(body?["choices"]).first?["logprobs"]?["content"])
            #expect(content.count == 2)
            let first = content.first
            let expectedToken = scriptedText(from: promptTokens, count: 1)
            #expect(string(first?["token"]) == expectedToken)
            #expect(first?["logprob"] == .double(-0.5))
            #expect(first?["bytes"] == .array(expectedToken.utf8.map { .int(Int($0)) }))
            #expect(array(first?["top_logprobs"]).count == 2)
        }
    }

    @Test("errors come in OpenAI's shape with the right status", arguments: [
        ("/v1/completions", "{not json", 400, "invalid_json"),
        ("/v1/completions", #"{"model":"other","prompt":"x"}"#, 404, "model_not_found"),
        ("/v1/completions", #"{"max_tokens":3}"#, 400, "missing_required_parameter"),
        ("/v1/completions", #"{"prompt":"x","temperature":-1}"#, 400, "invalid_value"),
        ("/v1/completions", #"{"prompt":[300]}"#, 400, "invalid_value"),
        ("/v1/completions", #"{"prompt":"x","max_tokens":1000}"#, 400, "context_length_exceeded"),
        // n choices are n sequences: no more than --max-num-seqs (16 here), as separate requests.
        ("/v1/completions", #"{"prompt":"x","n":17}"#, 400, "invalid_value"),
        // priority without --scheduling-policy priority is refused, not ignored.
        ("/v1/chat/completions", #"{"messages":[{"role":"user","content":"x"}],"priority":-5}"#, 400, "invalid_value"),
        ("/v1/chat/completions", #"{"messages":[{"role":"raise","content":"x"}]}"#, 400, "chat_template_error"),
        ("/v1/nothing", "{}", 404, "unknown_url"),
    ])
    func errors(path: String, body: String, status: Int, code: String) async throws {
        let template = testTemplate + "{% if messages[0].role == 'raise' %}{{ raise_exception('bad role') }}{% endif %}"
        try await withServer(template: template) { client in
            let (answer, json, _) = try await post(client, path, body)
            #expect(answer == status)
            #expect(string(json?["error"]?["code"]) == code)
            #expect(string(json?["error"]?["message"])?.isEmpty == false)
            #expect(json?["error"]?["type"] != nil && json?["error"]?["param"] != nil)
            // The server still answers the next request.
            let (after, _, _) = try await post(client, "/v1/completions", #"{"prompt":"ok","max_tokens":1}"#)
            #expect(after == 200)
        }
    }

    @Test("a known path asked with another method is a 405 listing the methods in Allow; HEAD answers where GET does")
    func methodsAndHead() async throws {
        try await withServer { client in
            for (path, method) in [("/v1/models", HTTPRequest.Method.delete), ("/v1/completions", .get),
                                   ("/health", .post), ("/v1/chat/completions", .put)] {
                try await client.execute(uri: path, method: method) { response in
                    #expect(response.status.code == 405, "\(method) \(path)")
                    let allowed = OpenAIServer.allowedMethods[path]!.map(\.rawValue).joined(separator: ", ")
                    #expect(response.headers[.allow] == allowed)
                    let json = try JSONValue.parse(String(buffer: response.body))
                    #expect(string(json["error"]?["code"]) == "method_not_allowed")
                }
            }
            for path in ["/health", "/v1/models"] {
                try await client.execute(uri: path, method: .head) { response in
                    #expect(response.status.code == 200, "HEAD \(path)")
                    #expect(response.body.readableBytes == 0)
                    #expect(response.headers[.contentType] == "application/json")
                }
            }
            // Every route in the table answers each of its methods (nothing listed is a 404/405).
            for (path, methods) in OpenAIServer.allowedMethods {
                for method in methods {
                    try await client.execute(uri: path, method: method, headers: [.contentType: "application/json"],
                                             body: ByteBuffer(string: #"{"prompt":"x","max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#)) { response in
                        #expect(![404, 405].contains(response.status.code), "\(method) \(path): \(response.status.code)")
                    }
                }
            }
        }
    }

    @Test("every response carries a request id: the client's when it sent a usable one, else a fresh one")
    func requestIDs() async throws {
        try await withServer { client in
            let field = AccessLogMiddleware.requestIDField
            var seen: Set<String> = []
            for _ in 0..<3 {
                try await client.execute(uri: "/v1/models", method: .get) { response in
                    let id = try #require(response.headers[field])
                    #expect(id.hasPrefix("req-"))
                    seen.insert(id)
                }
            }
            #expect(seen.count == 3)
            try await client.execute(uri: "/v1/completions", method: .post,
                                     headers: [.contentType: "application/json", field: "client-42"],
                                     body: ByteBuffer(string: "{not json")) { response in
                #expect(response.status.code == 400)
                #expect(response.headers[field] == "client-42")
            }
            try await client.execute(uri: "/health", method: .get, headers: [field: String(repeating: "x", count: 200)]) { response in
                #expect(response.headers[field]?.hasPrefix("req-") == true)
            }
        }
    }

    @Test("a body over the limit is a 413 in OpenAI's shape, and the server keeps serving")
    func oversizeBody() async throws {
        try await withServer(settings: HTTPServerSettings(maxRequestBytes: 1024)) { client in
            let big = #"{"prompt":""# + String(repeating: "x", count: 4096) + #"","max_tokens":1}"#
            let (status, json, _) = try await post(client, "/v1/completions", big)
            #expect(status == 413)
            #expect(string(json?["error"]?["code"]) == "request_too_large")
            let (after, _, _) = try await post(client, "/v1/completions", #"{"prompt":"ok","max_tokens":1}"#)
            #expect(after == 200)
        }
    }

    @Test("a failing worker step is a 503, or an error event before [DONE] when streaming")
    func workerFailure() async throws {
        try await withServer(runner: ScriptedStepRunner(failingSteps: [0, 1])) { client in
            let (status, body, _) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":3}"#)
            #expect(status == 503)
            #expect(string(body?["error"]?["message"])?.contains("scripted failure") == true)
            let (_, _, text) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":3,"stream":true}"#)
            let chunks = try ssePayloads(text)
            #expect(chunks.last?["error"] != nil)
        }
    }

    @Test("8 simultaneous HTTP requests all complete with their own text")
    func concurrentRequests() async throws {
        try await withServer(runner: ScriptedStepRunner(delay: .milliseconds(1))) { client in
            try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for index in 0..<8 {
                    group.addTask {
                        let prompt = String(repeating: "p", count: index + 1)
                        let stream = index % 2 == 0
                        let (_, body, text) = try await post(client, "/v1/completions",
                                                             #"{"prompt":"\#(prompt)","max_tokens":\#(4 + index),"stream":\#(stream)}"#)
                        if stream {
                            return (index, try ssePayloads(text).compactMap { string(array($0["choices"]).first?["text"]) }.joined())
                        }
                        return (index, string(array(body?["choices"]).first?["text"]))
                    }
                }
                for try await (index, text) in group {
                    #expect(text == scriptedText(from: index + 1, count: 4 + index), "request \(index)")
                }
            }
        }
    }
}

@Suite("Server features: API key, tokenize, queue bound, metrics")
struct ServerFeatureTests {
    @Test("with --api-key, /v1 routes need the bearer key (401 in OpenAI's shape otherwise); /health stays open")
    func apiKey() async throws {
        try await withServer(settings: HTTPServerSettings(apiKey: "sekret")) { client in
            for headers: HTTPFields in [[:], [.authorization: "Bearer wrong"], [.authorization: "sekret"],
                                        [.authorization: "Bearer sekret2"], [.authorization: "Bearer sekre"]] {
                try await client.execute(uri: "/v1/models", method: .get, headers: headers) { response in
                    #expect(response.status.code == 401, "\(headers)")
                    let json = try JSONValue.parse(String(buffer: response.body))
                    #expect(string(json["error"]?["code"]) == "invalid_api_key")
                    #expect(string(json["error"]?["type"]) == "invalid_request_error")
                    #expect(!String(buffer: response.body).contains("wrong"), "the offered key is not echoed")
                }
            }
            try await client.execute(uri: "/v1/models", method: .get, headers: [.authorization: "Bearer sekret"]) { response in
                #expect(response.status.code == 200)
            }
            try await client.execute(uri: "/v1/completions", method: .post,
                                     headers: [.authorization: "Bearer sekret", .contentType: "application/json"],
                                     body: ByteBuffer(string: #"{"prompt":"hi","max_tokens":2}"#)) { response in
                #expect(response.status.code == 200)
            }
            #expect(try await get(client, "/health").0 == 200)
        }
        #expect(APIKeyMiddleware.equalInConstantTime(Array("abc".utf8), Array("abc".utf8)))
        #expect(!APIKeyMiddleware.equalInConstantTime(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!APIKeyMiddleware.equalInConstantTime(Array("".utf8), Array("a".utf8)))
    }

    @Test("/tokenize encodes a prompt or a chat as generation would; /detokenize inverts it; /version answers")
    func tokenizeAndVersion() async throws {
        try await withServer { client in
            var (status, body, _) = try await post(client, "/tokenize", #"{"prompt":"hi<eos>","return_token_strs":true}"#)
            #expect(status == 200)
            #expect(array(body?["tokens"]).compactMap(int) == [104, 105, Int(ByteTokenizer.eos)])
            #expect(int(body?["count"]) == 3)
            #expect(int(body?["max_model_len"]) == 256)
            #expect(array(body?["token_strs"]).compactMap(string) == ["h", "i", "<eos>"])
            (status, body, _) = try await post(client, "/tokenize", #"{"messages":[{"role":"user","content":"yo"}]}"#)
            #expect(status == 200)
            let chat = String(decoding: array(body?["tokens"]).compactMap(int).map(UInt8.init), as: UTF8.self)
            #expect(chat == "<user>yo\n<assistant>")
            #expect(body?["token_strs"]?.isNull == true)
            (status, body, _) = try await post(client, "/detokenize", #"{"tokens":[104,105,256]}"#)
            #expect(status == 200)
            #expect(string(body?["prompt"]) == "hi<eos>")
            for (path, json, param) in [("/detokenize", #"{"tokens":[999]}"#, "tokens"), ("/detokenize", "{}", "tokens"),
                                        ("/tokenize", "{}", "prompt"), ("/tokenize", #"{"prompt":3}"#, "prompt"),
                                        ("/tokenize", #"{"prompt":"x","model":"other"}"#, "model")] {
                let (status, body, _) = try await post(client, path, json)
                #expect([400, 404].contains(status), "\(path) \(json)")
                #expect(string(body?["error"]?["param"]) == param, "\(path) \(json)")
            }
            let (versionStatus, version) = try await get(client, "/version")
            #expect(versionStatus == 200)
            #expect(string(version?["version"]) == TesselVersion.current)
        }
    }

    @Test("a burst past --max-queued-requests gets 429s with Retry-After; every admitted request completes")
    func queueFull() async throws {
        try await withServer(runner: ScriptedStepRunner(delay: .milliseconds(100)),
                             configuration: SchedulerConfiguration(maxSequences: 1, maxBatchedTokens: 32,
                                                                   maxWaitingSequences: 1)) { client in
            let outcomes = try await withThrowingTaskGroup(of: (Int, String?, JSONValue?).self) { group in
                for _ in 0..<5 {
                    group.addTask {
                        try await client.execute(uri: "/v1/completions", method: .post,
                                                 headers: [.contentType: "application/json"],
                                                 body: ByteBuffer(string: #"{"prompt":"hi","max_tokens":3}"#)) { response in
                            (response.status.code, response.headers[.retryAfter],
                             try? JSONValue.parse(String(buffer: response.body)))
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let refused = outcomes.filter { $0.0 == 429 }
            #expect(refused.count >= 3, "at most one running and one waiting: \(outcomes.map(\.0))")
            #expect(refused.allSatisfy { $0.1 == "1" && string($0.2?["error"]?["code"]) == "queue_full" })
            let served = outcomes.filter { $0.0 == 200 }
            #expect(served.count + refused.count == 5)
            #expect(served.allSatisfy { string(array($0.2?["choices"]).first?["text"]) == scriptedText(from: 2, count: 3) })
            let (status, body, _) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":1,"n":2}"#)
            #expect(status == 400)
            #expect(string(body?["error"]?["param"]) == "n")
        }
    }

    @Test("/metrics is Prometheus text with vLLM's names, and its counters match the requests served")
    func metrics() async throws {
        // Steps take a moment, as real ones do, so the stop string is seen before max_tokens is reached.
        try await withServer(runner: ScriptedStepRunner(delay: .milliseconds(20))) { client in
            for _ in 0..<2 {
                let (status, _, _) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":3}"#)
                #expect(status == 200)
            }
            let (status, type, text) = try await client.execute(uri: "/metrics", method: .get) { response in
                (response.status.code, response.headers[.contentType], String(buffer: response.body))
            }
            #expect(status == 200)
            #expect(type == PrometheusExposition.contentType)
            func value(_ series: String) -> Double? {
                text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
            }
            let model = #"{model_name="test-model"}"#
            #expect(value("vllm:prompt_tokens_total" + model) == 4)
            #expect(value("vllm:generation_tokens_total" + model) == 6)
            #expect(value(#"vllm:request_success_total{model_name="test-model",finished_reason="length"}"#) == 2)
            // A stop string ends its sequence from the text side: it still finished, with stop.
            let (stopped, _, _) = try await post(client, "/v1/completions", #"{"prompt":"hi","max_tokens":9,"stop":"d"}"#)
            #expect(stopped == 200)
            let after = try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
            #expect(after.contains(#"vllm:request_success_total{model_name="test-model",finished_reason="stop"} 1"#))
            #expect(after.contains(#"vllm:e2e_request_latency_seconds_count{model_name="test-model"} 3"#))
            #expect(value("vllm:time_to_first_token_seconds_count" + model) == 2)
            #expect(value("vllm:inter_token_latency_seconds_count" + model) == 4)
            #expect(value("vllm:e2e_request_latency_seconds_count" + model) == 2)
            #expect(value("vllm:request_queue_time_seconds_count" + model) == 2)
            #expect(value(#"vllm:e2e_request_latency_seconds_bucket{model_name="test-model",le="+Inf"}"#) == 2)
            #expect(value("vllm:num_requests_running" + model) == 0)
            #expect(value("vllm:prefix_cache_queries_total" + model) == 4)
            #expect(text.contains("# TYPE vllm:time_to_first_token_seconds histogram\n"))
            #expect(text.contains("# TYPE vllm:prompt_tokens_total counter\n"))
        }
    }

    @Test("a histogram's buckets are cumulative and end with +Inf; sum and count follow")
    func histogramExposition() {
        var histogram = Histogram(upperBounds: [0.5, 1])
        for value in [0.125, 0.5, 0.75, 3] { histogram.observe(value) }
        var out = PrometheusExposition()
        out.histogram("x_seconds", help: "X.", series: [([("a", "q\"")], histogram)])
        #expect(out.text == """
            # HELP x_seconds X.
            # TYPE x_seconds histogram
            x_seconds_bucket{a="q\\"",le="0.5"} 2
            x_seconds_bucket{a="q\\"",le="1"} 3
            x_seconds_bucket{a="q\\"",le="+Inf"} 4
            x_seconds_sum{a="q\\""} 4.375
            x_seconds_count{a="q\\""} 4

            """)
    }

    @Test("usage.prompt_tokens_details.cached_tokens counts the prompt's full blocks found in the prefix cache")
    func cachedTokens() async throws {
        try await withServer { client in
            // 10 tokens: two full blocks of 4 are cached by the first request; one token is always computed.
            let completion = #"{"prompt":"abcdefghij","max_tokens":2}"#
            var cached: [Int?] = []
            for _ in 0..<2 {
                let (_, body, _) = try await post(client, "/v1/completions", completion)
                cached.append(int(body?["usage"]?["prompt_tokens_details"]?["cached_tokens"]))
            }
            #expect(cached == [0, 8])
            let chat = #"{"messages":[{"role":"user","content":"abcdefghij"}],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}"#
            _ = try await post(client, "/v1/chat/completions", chat)
            let (_, _, text) = try await post(client, "/v1/chat/completions", chat)
            let usage = try ssePayloads(text).last?["usage"]
            // "<user>abcdefghij\n<assistant>": 28 tokens, of which 6 full blocks are found again.
            #expect(int(usage?["prompt_tokens"]) == 28)
            #expect(int(usage?["prompt_tokens_details"]?["cached_tokens"]) == 24)
        }
    }
}
