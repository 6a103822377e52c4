import Tokenizers

/// Builds the logprobs objects of OpenAI's two API generations from token ids.
struct LogprobFormatter: Sendable {
    let tokenizer: any Tokenizer

    func bytes(of token: TokenID) -> [UInt8] {
        tokenizer.pieceBytes(token, skipSpecialTokens: false)
    }

    func text(of token: TokenID) -> String {
        String(decoding: bytes(of: token), as: UTF8.self)
    }

    /// Chat: `{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}`.
    func chatEntry(_ sampled: SampledToken) -> JSONValue {
        let top: [JSONValue] = sampled.topLogprobs.map { alternative in
            .object([
                ("token", .string(text(of: alternative.token))),
                ("logprob", logprobJSON(alternative.logprob)),
                ("bytes", .array(bytes(of: alternative.token).map { .int(Int($0)) })),
            ])
        }
        return .object([
            ("token", .string(text(of: sampled.token))),
            ("logprob", logprobJSON(sampled.logprob ?? 0)),
            ("bytes", .array(bytes(of: sampled.token).map { .int(Int($0)) })),
            ("top_logprobs", .array(top)),
        ])
    }

    /// Legacy completions logprobs, accumulated token by token.
    struct Legacy {
        var tokens: [JSONValue] = []
        var tokenLogprobs: [JSONValue] = []
        var topLogprobs: [JSONValue] = []
        var textOffsets: [JSONValue] = []
        var offset = 0

        var json: JSONValue {
            .object([
                ("text_offset", .array(textOffsets)),
                ("token_logprobs", .array(tokenLogprobs)),
                ("tokens", .array(tokens)),
                ("top_logprobs", .array(topLogprobs)),
            ])
        }
    }

    /// Appends one token: its text, logprob (null for the first prompt token) and a
    /// `{token: logprob}` dict of the token itself and its alternatives.
    func append(token: TokenID, logprob: Float?, alternatives: [TokenLogprob], to legacy: inout Legacy) {
        let tokenText = text(of: token)
        legacy.tokens.append(.string(tokenText))
        legacy.textOffsets.append(.int(legacy.offset))
        legacy.offset += tokenText.unicodeScalars.count
        guard let logprob else {
            legacy.tokenLogprobs.append(.null)
            legacy.topLogprobs.append(.null)
            return
        }
        legacy.tokenLogprobs.append(logprobJSON(logprob))
        var dict: [(String, JSONValue)] = [(tokenText, logprobJSON(logprob))]
        for alternative in alternatives {
            let alternativeText = text(of: alternative.token)
            if dict.contains(where: { $0.0 == alternativeText }) { continue }
            dict.append((alternativeText, logprobJSON(alternative.logprob)))
        }
        legacy.topLogprobs.append(.object(dict))
    }
}

/// A float32 logprob as the shortest decimal that reads back as the same float (-0.7, not
/// -0.699999988079071).
func logprobJSON(_ value: Float) -> JSONValue {
    .double(Double("\(value)") ?? Double(value))
}

/// OpenAI's usage, `cached_tokens` counting the prompt tokens served from the prefix cache.
func usageJSON(promptTokens: Int, completionTokens: Int, cachedTokens: Int) -> JSONValue {
    .object([
        ("prompt_tokens", .int(promptTokens)),
        ("completion_tokens", .int(completionTokens)),
        ("total_tokens", .int(promptTokens + completionTokens)),
        ("prompt_tokens_details", .object([("cached_tokens", .int(cachedTokens))])),
    ])
}

/// The cached prompt tokens usage reports: each prompt once, as `prompt_tokens` counts it, with
/// the most any of its choices found in the cache.
func cachedPromptTokens(_ outputs: [ChoiceOutput], plans: [ChoicePlan]) -> Int {
    var byPrompt: [Int: Int] = [:]
    for (plan, output) in zip(plans, outputs) { byPrompt[plan.promptIndex] = max(byPrompt[plan.promptIndex] ?? 0, output.cachedPromptTokens) }
    return byPrompt.values.reduce(0, +)
}

/// `cmpl-…` / `chatcmpl-…`: a prefix and 32 random hex digits.
func makeResponseID(prefix: String) -> String {
    var generator = SystemRandomNumberGenerator()
    let high = generator.next() as UInt64
    let low = generator.next() as UInt64
    let hex = String(high, radix: 16) + String(low, radix: 16)
    return prefix + String(repeating: "0", count: max(0, 32 - hex.count)) + hex
}
